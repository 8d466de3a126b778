"""File operations built on the parjobs core, each a resumable `parjobs.Job`.

Importing this package registers the job types, so stored jobs of these types can be loaded.
"""

from .copy import CopyJob as CopyJob
from .delete import DeleteJob as DeleteJob
from .duplicates import DuplicatesJob as DuplicatesJob
from .hash import HashJob as HashJob
from .move import MoveJob as MoveJob
from .thumbnail import ThumbnailJob as ThumbnailJob

__all__ = ["CopyJob", "DeleteJob", "DuplicatesJob", "HashJob", "MoveJob", "ThumbnailJob"]
