#!/usr/bin/env bash
# The whole test suite: lint, types, unit tier, root tier (throwaway namespaces), then the
# VM tier for tests that need kernel features this machine lacks (netns-lab/vm/run).
# Run as root on Debian 12; installs what it needs first. Extra arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install.sh >/dev/null
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
