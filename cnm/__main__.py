"""python -m cnm: the CLI."""

import sys

from cnm.cli import main

sys.exit(main())
