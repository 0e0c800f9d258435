#!/bin/busybox sh
# /init of the cnm VM, run from the initramfs with busybox only. It loads the kernel
# modules, mounts the host's / (9p, read-only) under a tmpfs overlay so the guest may write
# anywhere and nothing reaches the host, bind-mounts the Python disk's trees over their host
# paths, and runs the job with the host's bash in a chroot. The job's output, then
# "CNM-VM-EXIT-<nonce>=<code>", go to the second serial port, which the host reads; kernel
# messages go to the first.
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

job=
nonce=
for arg in $(cat /proc/cmdline); do
  case $arg in
    cnm.job=*) job=${arg#cnm.job=} ;;
    cnm.nonce=*) nonce=${arg#cnm.nonce=} ;;
  esac
done
out=/dev/ttyS1
finish() {
  echo "CNM-VM-EXIT-$nonce=$1" >$out
  poweroff -f
}
fail() {
  echo "cnm-vm (guest): $*" >$out
  finish 125
}

release=$(cat /etc/cnm-vm-release)
while read -r m params; do
  insmod "/lib/modules/$release/$m" $params || fail "insmod $m failed"
done </etc/cnm-vm-modules

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt/host \
  || fail "cannot mount the host's / (9p tag hostroot)"
mount -t tmpfs -o mode=755 rw /mnt/rw
mkdir /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work root \
  /newroot || fail "cannot mount the overlay over the host's /"
mount -t ext4 -o ro,noload /dev/vda /mnt/py || fail "cannot mount the Python disk (/dev/vda)"
while read -r name path; do
  mount --bind "/mnt/py/$name" "/newroot$path" || fail "cannot bind the Python disk at $path"
done </mnt/py/MOUNTS

mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
# No fresh tmpfs on /tmp: the overlay already makes it writable without touching the host,
# and the checkout itself may live under /tmp (CI clones there).
mount -t tmpfs -o mode=755 tmpfs /newroot/run
hostname cnm-vm
ip link set lo up

# The job file is read from the raw 9p view: the guest's own /tmp and /run hide the host's.
[ -n "$job" ] || fail "no cnm.job= on the kernel command line"
cp "/mnt/host$job" /newroot/run/cnm-vm-job.sh || fail "cannot read the job $job"
# Through a pipe, so the job's output is not a terminal (no colours, no progress redraws).
{ chroot /newroot /bin/bash /run/cnm-vm-job.sh </dev/null; echo $? >/tmp/rc; } 2>&1 | cat >$out
finish "$(cat /tmp/rc)"
