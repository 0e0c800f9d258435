#!/usr/bin/env bash
# The whole test suite: lint, types, unit tier, root tier (throwaway namespaces), lab tier
# (a real dockerd beside cnm and driving it as its network and IPAM plugin, a real podman
# driving cnm-cni), then the VM tier for tests
# that need kernel features this machine lacks (netns-lab/vm/run). Run as root on Debian 12. It installs what it needs
# first: cnm (scripts/install.sh), then the Debian packages of the steps test, lab and vm in
# scripts/packages.txt (bind9-dnsutils; docker.io, containerd, runc, podman, netavark, the CNI
# reference plugins; qemu-system-x86, kmod,
# busybox-static, e2fsprogs) and the venv's test extras; a program still missing stops it
# here, named with its package, before pytest starts. Extra arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install.sh >/dev/null
bash scripts/packages.sh install test lab vm
stamp=.venv/.cnm-test-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
export PATH="$top/.venv/bin:$PATH"
echo "== ruff"
ruff check .
echo "== mypy (strict)"
PYTHON="$top/.venv/bin/python" scripts/typecheck
echo "== pytest"
# Tests marked vm need kernel features (ipvlan, 802.1q, dummy). On a kernel that lacks
# them they are deselected here (not skipped: they do run, in the VM, below).
lacks=""
if ! lacks=$(netns-lab/vm/probe); then
  here=(-m "not vm")
else
  here=()
fi
status=0
python -m pytest -q -p no:cacheprovider "${here[@]}" tests "$@" || status=$?
if [ "$status" -ne 0 ]; then
  exit "$status"  # the last line printed stays this run's summary
fi
if [ -n "$lacks" ]; then
  echo "== VM tier: $lacks"
  netns-lab/vm/run -q -m vm tests "$@"
fi
