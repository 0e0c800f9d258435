#!/bin/bash
# Man pages and shell completion, generated from the parsers and installed where man, bash
# and zsh look for them (scripts/install.sh calls it):
#   bash scripts/install-docs.sh [--root DIR]     # --root stages the files under DIR
# cnm.1 and cnmd.8 go to /usr/local/share/man/man1 and man8 (then `man cnm`), the bash
# completion to /usr/local/share/bash-completion/completions/cnm (bash-completion reads it
# once installed; without it, `source` that file), the zsh one to
# /usr/local/share/zsh/site-functions/_cnm. argparse-manpage (the venv's "man" extra) makes
# the pages, shtab (a dependency of cnm) the completions.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    *) echo "install-docs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-$here/.venv/bin/python}
"$py" -c 'import argparse_manpage' 2>/dev/null || {
  echo "install-docs.sh: argparse-manpage is missing: run scripts/install.sh (it installs" \
    "the venv's man extra)" >&2; exit 2; }
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
PYTHON="$py" bash "$here/scripts/manpages.sh" "$build" >/dev/null
man=$root/usr/local/share/man
bashdir=$root/usr/local/share/bash-completion/completions
zshdir=$root/usr/local/share/zsh/site-functions
install -d -m 0755 "$man/man1" "$man/man8" "$bashdir" "$zshdir"
install -m 0644 "$build/cnm.1" "$man/man1/cnm.1"
install -m 0644 "$build/cnmd.8" "$man/man8/cnmd.8"
"$py" -m cnm completion bash > "$bashdir/cnm"
"$py" -m cnm completion zsh > "$zshdir/_cnm"
chmod 0644 "$bashdir/cnm" "$zshdir/_cnm"
if [ -z "$root" ] && command -v mandb >/dev/null; then
  mandb -q 2>/dev/null || true
fi
echo "man pages: $man/man1/cnm.1 $man/man8/cnmd.8; completion: $bashdir/cnm $zshdir/_cnm"
