#!/usr/bin/env bash
# The whole test suite: lint, types, unit tier, root tier (throwaway namespaces).
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
exec python -m pytest -q -p no:cacheprovider tests "$@"
