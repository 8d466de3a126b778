"""File operations built on the parjobs core, each a resumable `parjobs.Job`.

The job classes load lazily, on first use: ``from parjobs.ops import CopyJob`` imports the copy
job only (no Pillow), ``ThumbnailJob`` brings in Pillow. The job types register with the core
through the ``parjobs.job_types`` entry points (pyproject.toml), so stored jobs load without
importing this package first. The errors the operations raise on purpose are all here, in one
tree (`parjobs.ops._errors` draws it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._util import fixup_module_metadata
from ._errors import CopyError as CopyError
from ._errors import DestinationChangedError as DestinationChangedError
from ._errors import DirConflictError as DirConflictError
from ._errors import ForeignDirError as ForeignDirError
from ._errors import ImageError as ImageError
from ._errors import ImageTooLargeError as ImageTooLargeError
from ._errors import NotOursError as NotOursError
from ._errors import SourceChangedError as SourceChangedError
from ._errors import SpecialFileError as SpecialFileError
from ._errors import TrashError as TrashError
from ._errors import UnsupportedImageError as UnsupportedImageError
from ._errors import VerifyError as VerifyError
from ._errors import WalkError as WalkError

if TYPE_CHECKING:
    from ._copy import CopyJob as CopyJob
    from ._delete import DeleteJob as DeleteJob
    from ._duplicates import DuplicatesJob as DuplicatesJob
    from ._hash import HashJob as HashJob
    from ._move import MoveJob as MoveJob
    from ._thumbnail import ThumbnailJob as ThumbnailJob
    from ._transfer import Answer as Answer
    from ._transfer import AskCallback as AskCallback
    from ._transfer import Choice as Choice
    from ._transfer import Conflict as Conflict
    from ._transfer import Policy as Policy
    from ._undo import UndoJob as UndoJob

#: Where each lazily loaded name lives.
_LAZY = {
    "Answer": "_transfer",
    "AskCallback": "_transfer",
    "Choice": "_transfer",
    "Conflict": "_transfer",
    "Policy": "_transfer",
    "CopyJob": "_copy",
    "DeleteJob": "_delete",
    "DuplicatesJob": "_duplicates",
    "HashJob": "_hash",
    "MoveJob": "_move",
    "ThumbnailJob": "_thumbnail",
    "UndoJob": "_undo",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    if isinstance(value, type) and value.__module__.startswith(f"{__name__}."):
        value.__module__ = __name__  # reprs and tracebacks show parjobs.ops.CopyJob
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Answer",
    "AskCallback",
    "Choice",
    "Conflict",
    "CopyError",
    "CopyJob",
    "DeleteJob",
    "DestinationChangedError",
    "DirConflictError",
    "DuplicatesJob",
    "ForeignDirError",
    "HashJob",
    "ImageError",
    "ImageTooLargeError",
    "MoveJob",
    "NotOursError",
    "Policy",
    "SourceChangedError",
    "SpecialFileError",
    "ThumbnailJob",
    "TrashError",
    "UndoJob",
    "UnsupportedImageError",
    "VerifyError",
    "WalkError",
]

# The errors show as parjobs.ops.CopyError in reprs and tracebacks (the lazy names get the
# same in __getattr__, when they load).
fixup_module_metadata(__name__, [n for n in __all__ if n not in _LAZY], globals())
del fixup_module_metadata
