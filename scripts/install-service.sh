#!/bin/bash
# Install cnmd as a systemd service: the unit (ExecStart at this checkout's .venv/bin/cnmd,
# or --cnmd PATH), an empty /etc/cnm/daemon.json if there is none, then enable and start it.
#   bash scripts/install-service.sh [--root DIR] [--cnmd PATH] [--no-start]
# --root stages the files under DIR (and implies --no-start): what the tests do.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=/ cnmd="$here/.venv/bin/cnmd" start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; start=0; shift 2 ;;
    --cnmd) cnmd=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    *) echo "install-service.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$cnmd" ] || { echo "install-service.sh: $cnmd is not an executable cnmd" \
  "(run scripts/install.sh first, or give --cnmd PATH)" >&2; exit 2; }
install -d -m 0755 "$root/etc/systemd/system" "$root/etc/cnm"
sed "s|@CNMD@|$cnmd|" "$here/packaging/cnmd.service" > "$root/etc/systemd/system/cnmd.service"
[ -e "$root/etc/cnm/daemon.json" ] || echo '{}' > "$root/etc/cnm/daemon.json"
if [ "$start" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now cnmd.service
  systemctl --no-pager status cnmd.service | head -3
fi
