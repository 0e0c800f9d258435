#!/usr/bin/env bash
# Install what cnm and its tests need on a Debian 12 machine (run as root); idempotent.
# Debian packages: iproute2 and nftables (ip and nft, used by tests and the tour only: cnm
# itself speaks netlink and calls libnftables1 in-process),
# iputils-ping, util-linux (nsenter), python3-venv. Then a venv at .venv with cnm in it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

need=()
for pkg in iproute2 iputils-ping util-linux procps python3-venv python3-pip nftables libnftables1; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
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
