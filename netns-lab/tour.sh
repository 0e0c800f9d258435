#!/usr/bin/env bash
# A short tour of cnm. It runs cnmd on a throwaway "host" namespace (never this machine's
# own), creates networks and sandboxes, shows what they look like and that they reach each
# other, then removes everything. Run as root after scripts/install.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
lab="$top/netns-lab"
export PATH="$top/.venv/bin:$PATH"

hostns="cnmtour-$$"
tmp=$(mktemp -d /tmp/cnm-tour.XXXXXX)
export CNM_HOST="unix://$tmp/cnm.sock"
daemon_pid=""

cleanup() {
  set +e
  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; fi
  for f in "$tmp"/run/netns/*; do [ -e "$f" ] && umount -l "$f" 2>/dev/null; done
  ip netns del "$hostns" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
fails() { printf '$ %s\n' "$*"; if "$@"; then echo "(unexpected success)"; exit 1; fi; }

say "A throwaway namespace plays the host; cnmd manages it (--netns)"
ip netns add "$hostns"
ip -n "$hostns" link set lo up
# The tour's host has no upstream resolver: names the embedded DNS does not hold get
# SERVFAIL, and nothing is ever asked of a real resolver.
printf 'search tour.test\n' >"$tmp/resolv.conf"
cnmd --netns "/run/netns/$hostns" --state-dir "$tmp/state" --run-dir "$tmp/run" \
  --resolv-conf "$tmp/resolv.conf" -H "$CNM_HOST" --docker-plugin none >"$tmp/cnmd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do cnm info >/dev/null 2>&1 && break; sleep 0.1; done
run cnm info

say "The pre-defined networks: the default bridge (cnm0), host and none"
run cnm network ls

say "A user-defined bridge network, and two sandboxes on it"
run cnm network create --subnet 10.42.0.0/24 web
run cnm sandbox create --network web web1
run cnm sandbox create --network web --ip 10.42.0.20 web2
say "A sandbox on the default bridge (like docker run without --network)"
run cnm sandbox create legacy
run cnm sandbox ls

say "Inside a sandbox: its own interfaces, routes and /etc/hosts"
run cnm sandbox exec web1 -- ip -br addr
run cnm sandbox exec web1 -- ip route
run cnm sandbox exec web1 -- cat /etc/hosts

say "Sandboxes on one network reach each other, by name too (embedded DNS at 127.0.0.11)"
run cnm sandbox exec web1 -- ping -c 2 -W 1 10.42.0.20
run cnm sandbox exec web1 -- cat /etc/resolv.conf
run cnm sandbox exec web1 -- ping -c 1 -W 1 web2
run cnm sandbox exec web1 -- getent hosts web2 web2.web

say "The default bridge has no name resolution (as in Docker): legacy cannot resolve web1"
fails cnm sandbox exec legacy -- getent hosts web1

say "legacy is not on web; connect it (it gets eth1) and it reaches web2 directly"
run cnm network connect web legacy
run cnm sandbox exec legacy -- ip -br addr
run cnm sandbox exec legacy -- ping -c 1 -W 1 10.42.0.20
run cnm network disconnect web legacy
fails cnm sandbox exec legacy -- ping -c 1 -W 1 10.42.0.20

say "An endpoint reserved before any sandbox joins it (Docker's CreateEndpoint, then Join)"
run cnm endpoint create --ip 10.42.0.77 --alias cache web spare
run cnm endpoint ls
say "--dry-run prints what a join would do, and does nothing"
run cnm endpoint join --dry-run --ifname cache0 spare legacy
run cnm endpoint join --ifname cache0 spare legacy
run cnm sandbox exec web1 -- ping -c 1 -W 1 cache
run cnm endpoint leave spare
fails cnm sandbox exec web1 -- ping -c 1 -W 1 10.42.0.77
run cnm endpoint rm spare

say "Publish a port: web2 serves HTTP on 80, published on the host's port 8080"
run cnm port add web2 8080:80
run cnm port ls web2
cnm sandbox exec web2 -- python3 -m http.server 80 --bind 0.0.0.0 >"$tmp/http.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do grep -q Serving "$tmp/http.log" && break; sleep 0.1; done
say "Reach it from the host itself, and from web1 through the host (hairpin)"
run ip netns exec "$hostns" python3 "$lab/fetch.py" http://127.0.0.1:8080/
run cnm sandbox exec web1 -- python3 "$lab/fetch.py" http://10.42.0.1:8080/
say "The server saw each client's address (the host's own client comes via the gateway)"
run cat "$tmp/http.log"
kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true
say "cnm's whole firewall: one nftables table, a fixed set of rules; ports are map elements"
run ip netns exec "$hostns" nft list map inet cnm pub4_any
run cnm port rm web2 8080
fails ip netns exec "$hostns" python3 "$lab/fetch.py" http://127.0.0.1:8080/

say "The kernel side, seen from the host namespace: a bridge per network, a veth per endpoint"
run ip -n "$hostns" -br link

say "Bad input is refused, and nothing changes"
fails cnm network create --subnet 10.42.0.0/16 clash
fails cnm network rm web

say "Tear down"
run cnm sandbox rm web1 web2 legacy
run cnm network rm web
run ip -n "$hostns" -br link
say "Tour done: everything it made is gone"
