#!/usr/bin/env bash
# The Debian packages of a step (see scripts/packages.txt), on a Debian 12 machine as root.
#
#   scripts/packages.sh install STEP...   install what the steps need (idempotent), then check
#   scripts/packages.sh check STEP...     every program the steps call exists, or name the
#                                         package that provides each missing one (exit 1)
#   scripts/packages.sh list STEP...      the steps' packages, one a line
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
manifest="${CNM_PACKAGES:-$here/packages.txt}"  # CNM_PACKAGES: for its tests

usage() { echo "usage: $0 install|check|list STEP... (steps: $(steps))" >&2; exit 2; }
steps() { awk '!/^#/ && NF {print $1}' "$manifest" | sort -u | tr '\n' ' '; }

# The lines of the named steps: "step package program..."
lines() {
  local want=" $* "
  awk -v want="$want" '!/^#/ && NF && index(want, " " $1 " ")' "$manifest"
}

packages() { lines "$@" | awk '{print $2}' | sort -u; }

# No `| grep -q` here: under pipefail, grep leaving early can kill the writer with SIGPIPE
# and fail the pipeline although it matched.
installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

present() {
  case "$1" in
    lib:*) ldconfig -p 2>/dev/null | awk -v n="${1#lib:}" '$1 == n {hit = 1} END {exit !hit}' ;;
    /*) [ -x "$1" ] ;;
    *) PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null ;;
  esac
}

check() {
  local bad=0 step package programs program seen=" "
  while read -r step package programs; do
    for program in $programs; do
      case "$seen" in *" $program "*) continue ;; esac
      seen+="$program "
      if ! present "$program"; then
        echo "missing: ${program#lib:} (Debian package $package; $(installer "$step")" \
             "installs it)" >&2
        bad=1
      fi
    done
  done < <(lines "$@")
  return "$bad"
}

# The command of this repository that installs a step's packages.
installer() {
  case "$1" in
    cnm) echo "bash scripts/install.sh" ;;
    bench) echo "bash bench/install.sh" ;;
    *) echo "bash scripts/test.sh" ;;
  esac
}

install() {
  local need=()
  mapfile -t need < <(for p in $(packages "$@"); do installed "$p" || echo "$p"; done)
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Some of these packages start a service at install (docker.io starts dockerd in the
    # machine's own namespace and sets its FORWARD policy to DROP; etcd-server, ...): deny
    # service starts while they install, unless a policy-rc.d is already in place.
    local deny=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      deny=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$deny"
      chmod 755 "$deny"
      trap 'rm -f "$deny"' EXIT
    fi
    echo "installing: ${need[*]}" >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ -n "$deny" ]; then
      rm -f "$deny"
      trap - EXIT
    fi
  fi
  check "$@"
}

[ $# -ge 2 ] || usage
command=$1
shift
for step in "$@"; do
  case " $(steps)" in *" $step "*) ;; *) echo "unknown step: $step" >&2; usage ;; esac
done
case "$command" in
  install) install "$@" ;;
  check) check "$@" ;;
  list) packages "$@" ;;
  *) usage ;;
esac
