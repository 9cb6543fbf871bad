"""`python -m scoresde`: the same as the `scoresde` command."""

import sys

from .cli import main

sys.exit(main())
