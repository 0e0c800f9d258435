#!/usr/bin/env bash
# Install what cnm and its tests need on a Debian 12 machine (run as root); idempotent.
# Debian packages: iproute2 and nftables (ip and nft, used by tests and the tour only: cnm
# itself speaks netlink and calls libnftables1 in-process),
# iputils-ping, util-linux (nsenter), python3-venv; docker.io, containerd and runc for the
# lab tier; qemu-system-x86, kmod, busybox-static and e2fsprogs for the VM tier (its
# runner, netns-lab/vm/run, downloads Debian's kernel package itself, once, into its
# cache). Then a venv at .venv with cnm in it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

missing() {
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}
mapfile -t need < <(missing iproute2 iputils-ping util-linux procps python3-venv python3-pip \
  nftables libnftables1)
# The lab tier runs a real dockerd beside cnm, inside a throwaway namespace only; its
# recommends (git, apparmor, ...) are not needed.
mapfile -t lab < <(missing docker.io containerd runc)
# The VM tier boots Debian's kernel under qemu (no recommends: no GUI, no firmware).
mapfile -t vm < <(missing qemu-system-x86 kmod busybox-static e2fsprogs)
if [ ${#need[@]} -gt 0 ] || [ ${#lab[@]} -gt 0 ] || [ ${#vm[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#lab[@]} -gt 0 ]; then
    # Installing docker.io would start dockerd in the machine's own namespace (and set its
    # FORWARD policy to DROP): deny service starts while it installs, unless a
    # policy-rc.d is already in place.
    deny=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      deny=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$deny"
      chmod 755 "$deny"
      trap 'rm -f "$deny"' EXIT
    fi
    apt-get install -y -qq --no-install-recommends "${lab[@]}" >/dev/null
    if [ -n "$deny" ]; then
      rm -f "$deny"
      trap - EXIT
    fi
  fi
  if [ ${#vm[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${vm[@]}" >/dev/null
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.cnm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
echo "cnm installed in $top/.venv (cnm, cnmd: $top/.venv/bin)"
