"""The file-tree helpers, now public in `parjobs.testing` (kept importable here for the
tests and the crash-test children that import ``_trees``)."""

from parjobs.testing import read, snapshot, write

__all__ = ["read", "snapshot", "write"]
