#!/usr/bin/env bash
# Install cnm on a Debian 12 machine (run as root); idempotent. The Debian packages of the
# step "cnm" in scripts/packages.txt (iproute2, nftables, libnftables1, iputils-ping,
# util-linux, python3-venv, python3-pip: what cnm needs to run, and the tour), then a venv
# at .venv with cnm in it, and its man pages and shell completion (scripts/install-docs.sh).
# What the tests need on top is installed by scripts/test.sh, the
# benchmarks' peers by bench/install.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/packages.sh install cnm

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.cnm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[man]'
  touch "$stamp"
fi
bash scripts/install-docs.sh >/dev/null
echo "cnm installed in $top/.venv (cnm, cnmd: $top/.venv/bin); man cnm, man cnmd;" \
  "completion for bash and zsh"
