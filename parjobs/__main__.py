"""``python -m parjobs``: the command line, for systems where the ``parjobs`` script is not on
PATH (e.g. a ``pip install --user`` without ``~/.local/bin`` in PATH)."""

from parjobs.cli import run

run()
