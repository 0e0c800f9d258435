"""A real podman (4.3, network_backend = "cni") driving cnm-cni, inside throwaway namespaces.

A holder process owns a private mount namespace (tmpfs on /run, so podman's netns bind
mounts, its locks and runc's state never reach the machine's /run; a resolv.conf with no
nameserver over /etc/resolv.conf, so containers ask nothing outside) and sits in the lab's
throwaway host namespace. cnmd and every podman command run inside both (nsenter -t HOLDER
-m -n): cnmd must see the namespaces podman binds under that private /run to adopt them.
podman's configuration (containers.conf, the CNI conflist naming `cnm`, the plugin dir with
cnm-cni linked in as `cnm`), storage and run root all live in the lab's temp dir; nothing
is read from or written to the machine's /etc/containers, /etc/cni or /var/lib/containers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cnm.testing.netns import HostNs, run

PODMAN = "podman"
BUSYBOX = "/bin/busybox"
CNI_PLUGIN = str(Path(sys.executable).with_name("cnm-cni"))
APPLETS = ("sh", "ping", "nslookup", "httpd", "sleep", "cat", "ip")

CONTAINERS_CONF = """[containers]
default_capabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
  "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT", "NET_RAW"]
[network]
network_backend = "{backend}"
cni_plugin_dirs = ["{dir}/cni/bin"]
network_config_dir = "{dir}/netconf"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""

# The holder: private mounts, then sleep in the lab's host namespace (nsenter --net).
HOLDER = """set -eu
mount -t tmpfs -o mode=755 cnmlab-run /run
mount --bind "$1/resolv.conf" /etc/resolv.conf
echo ready
exec sleep 3600
"""


def missing() -> list[str]:
    return [p for p in (BUSYBOX, "/usr/sbin/runc", "/usr/lib/podman/netavark")
            if not os.path.exists(p)] + ([] if shutil.which(PODMAN) else [PODMAN])


def conflist(name: str, network: str, socket: str) -> dict[str, object]:
    """A CNI network configuration naming cnm, as an administrator writes one."""
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "cnm", "network": network, "socket": socket,
         "capabilities": {"portMappings": True, "ips": True, "mac": True, "aliases": True}}]}


class Podman:
    """podman in the lab's host namespace and private mounts; ``start`` makes the holder."""

    def __init__(self, host: HostNs, root: Path, backend: str = "cni") -> None:
        self.host, self.dir, self.backend = host, root, backend
        self.holder: subprocess.Popen[str] | None = None

    def start(self) -> None:
        d = self.dir
        for sub in ("cni/bin", "netconf", "rootfs/bin", "rootfs/www", "rootfs/etc",
                    "rootfs/proc", "rootfs/sys", "rootfs/dev", "rootfs/tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(BUSYBOX, d / "rootfs/bin/busybox")
        for applet in APPLETS:
            (d / "rootfs/bin" / applet).symlink_to("busybox")
        (d / "rootfs/www/index.html").write_text("hello-cnm\n")
        (d / "cni/bin/cnm").symlink_to(CNI_PLUGIN)
        (d / "resolv.conf").write_text("# the lab host has no upstream resolver\n")
        (d / "containers.conf").write_text(CONTAINERS_CONF.format(dir=d, backend=self.backend))
        self.holder = subprocess.Popen(
            ["nsenter", f"--net={self.host.path}", "unshare", "--mount",
             "--propagation=private", "bash", "-c", HOLDER, "bash", str(d)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.kill()
            raise RuntimeError(f"the holder did not start: {self.holder.communicate()[1]}")

    @property
    def pid(self) -> int:
        assert self.holder is not None
        return self.holder.pid  # nsenter, unshare and bash exec: the pid is sleep's

    @property
    def netns(self) -> str:
        """The lab's host namespace by a path that reads the same in the private mounts."""
        return f"/proc/{self.pid}/ns/net"

    def inside(self) -> tuple[str, ...]:
        """A command prefix that runs in the holder's mounts and network namespace."""
        return ("nsenter", "-t", str(self.pid), "-m", "-n")

    def write_network(self, name: str, network: str, socket: str) -> None:
        path = self.dir / "netconf" / f"{name}.conflist"
        path.write_text(json.dumps(conflist(name, network, socket)))

    def podman(self, *args: str, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        d = self.dir
        cmd = [*self.inside(), "env", f"CONTAINERS_CONF={d}/containers.conf", PODMAN,
               "--root", str(d / "storage"), "--runroot", str(d / "runroot"),
               "--tmpdir", str(d / "tmp"), "--storage-driver", "vfs", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: rc {r.returncode}: {r.stderr}")
        return r

    def run_container(self, name: str, *args: str, cmd: tuple[str, ...]) -> str:
        """`podman run -d` of the busybox rootfs; the container's id."""
        r = self.podman("run", "-d", "--name", name, "--ulimit", "nofile=1024:1024",
                        "--ulimit", "nproc=4096:4096", *args, "--rootfs",
                        str(self.dir / "rootfs"), *cmd)
        return r.stdout.strip().splitlines()[-1]

    def exec(self, name: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.podman("exec", name, *cmd, timeout=timeout, check=False)

    def in_host(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command in the lab's host namespace (the machine's mounts)."""
        return run("nsenter", f"--net={self.host.path}", *cmd, check=False, timeout=timeout)

    def stop(self) -> None:
        """Remove every container, then end every process left in the private mounts (the
        holder, and a conmon a failed test may have left) by its pid."""
        if self.holder is None:
            return
        if self.holder.poll() is None:
            self.podman("rm", "-a", "-f", "-t", "0", check=False, timeout=120)
            mine = os.readlink(f"/proc/{self.pid}/ns/mnt")
            for pid in _pids_in(mine):
                if pid != self.pid:
                    os.kill(pid, signal.SIGKILL)
            self.holder.kill()
        self.holder.communicate(timeout=10)
        self.holder = None
        time.sleep(0.1)


def _pids_in(mnt_ns: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdecimal():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == mnt_ns:
                    out.append(int(entry))
            except OSError:
                continue
    return out
