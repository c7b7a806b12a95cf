"""`python -m tagging.cli`: the same as the `tagging` command."""

import sys

from tagging.cli import main

sys.exit(main())
