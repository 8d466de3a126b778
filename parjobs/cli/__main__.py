"""``python -m parjobs.cli``."""

import sys

from . import main

sys.exit(main())
