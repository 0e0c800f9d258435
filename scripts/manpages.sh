#!/bin/bash
# Man pages generated from the parsers (argparse-manpage, in the test extras):
#   bash scripts/manpages.sh [OUTDIR]      # default build/man: cnm.1, cnmd.8
# Install them with: install -m 0644 build/man/cnm.1 /usr/local/share/man/man1/ (and cnmd.8
# under man8), then `man cnm`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/build/man}
py=${PYTHON:-$here/.venv/bin/python}
version=$("$py" -c 'import cnm; print(cnm.__version__)')
mkdir -p "$out"
"$py" -c "import sys; from argparse_manpage.cli import main; sys.argv[0] = 'argparse-manpage'; sys.exit(main())" --module cnm.cli --function build_parser --prog cnm \
  --version "$version" --project-name cnm --manual-section 1 \
  --description "the Container Network Model: networks, endpoints and sandboxes" \
  --output "$out/cnm.1"
"$py" -c "import sys; from argparse_manpage.cli import main; sys.argv[0] = 'argparse-manpage'; sys.exit(main())" --module cnm.daemon --function parser --prog cnmd \
  --version "$version" --project-name cnm --manual-section 8 \
  --description "the Container Network Model daemon" --output "$out/cnmd.8"
echo "$out/cnm.1 $out/cnmd.8"
