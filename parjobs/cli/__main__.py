"""``python -m parjobs.cli``."""

from . import run

run()
