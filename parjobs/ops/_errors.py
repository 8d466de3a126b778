"""Every error the built-in operations raise on purpose, in one tree (exported by `parjobs.ops`).

::

    ParjobsError
     ├── CopyError (also OSError)          a copy or move item failed on purpose
     │    ├── SpecialFileError              a special source; a special destination kept
     │    ├── SourceChangedError            the source changed while it was read
     │    ├── NotOursError                  our temporary was replaced before its rename
     │    ├── VerifyError                   the destination read back different bytes
     │    ├── DirConflictError              a non-directory is where a directory is needed
     │    ├── ForeignDirError               a cluster worker's directory is not the manager's
     │    └── WalkError                     the walk could not read an entry
     ├── TrashError (also OSError)         an item cannot be moved to a trash
     ├── ImageError                         a file cannot be thumbnailed (its content)
     │    ├── UnsupportedImageError
     │    └── ImageTooLargeError
     └── JobSpecError
          └── DestinationChangedError       a resumed job's destination was swapped
"""

from __future__ import annotations

from .._exceptions import JobSpecError, ParjobsError

__all__ = [
    "CopyError",
    "DestinationChangedError",
    "DirConflictError",
    "ForeignDirError",
    "ImageError",
    "ImageTooLargeError",
    "NotOursError",
    "SealedDirError",
    "SourceChangedError",
    "SpecialFileError",
    "TrashError",
    "UnsupportedImageError",
    "VerifyError",
    "WalkError",
    "may_pass",
]


class CopyError(ParjobsError, OSError):
    """Base of the errors a copy raises on purpose; ``filename`` names the file concerned."""

    def __str__(self) -> str:  # the message already names the path
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class SpecialFileError(CopyError):
    """The source is not a regular file (FIFO, socket, device, directory or symlink), or the
    destination name holds a FIFO, socket or device, which is never replaced."""


class SourceChangedError(CopyError):
    """The source's size or mtime changed while it was copied; the copy was discarded."""


class NotOursError(CopyError):
    """A temporary this copy wrote was replaced or changed by someone else before its rename:
    nothing was published, and what is there now was left alone."""


class VerifyError(CopyError):
    """The destination read back with a different digest than the source; it was discarded.

    ``filename`` is the destination; ``expected``/``actual`` are the xxh3-128 hex digests.
    """

    expected: str
    actual: str


class DirConflictError(CopyError):
    """A directory is needed where the destination holds something else (file, symlink)."""


class ForeignDirError(CopyError):
    """A cluster worker's destination (or thumbnail output) directory lacks the probe the
    manager put there for the job (`parjobs.ops._probe`): the worker's directory of that
    path is not the manager's (a share not mounted on the worker's host, a path map that
    points elsewhere). Nothing was written there."""


class SealedDirError(CopyError):
    """The destination directory is append-only or immutable (``chattr +a``/``+i``): no
    name can be removed there, so a temporary could never be renamed into place (nor
    removed); its files fail before anything is written (`DestTree.check_writable`)."""


class WalkError(CopyError):
    """The walk could not read an entry (unreadable directory, symlink loop)."""


class TrashError(ParjobsError, OSError):
    """The item cannot be moved to a trash; it was left where it was.

    Raised when no usable trash exists on the item's filesystem, when the rename into the
    trash would cross filesystems (parjobs never copies to trash), or when the item is a mount
    point. ``filename`` names the item or the offending trash directory.
    """

    def __str__(self) -> str:
        if self.errno is None and self.filename is not None:
            return f"{self.strerror}: {self.filename!r}"
        return super().__str__()


class ImageError(ParjobsError):
    """The file could not be thumbnailed because of its content: corrupt, truncated, etc.

    ``path`` names the file and ``reason`` says what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot thumbnail {self.path!r}: {self.reason}"


class UnsupportedImageError(ImageError):
    """The file is not an image in one of the `INPUT_FORMATS` (a job may just skip it)."""


class ImageTooLargeError(ImageError):
    """The image claims more pixels than allowed: a possible decompression bomb."""


class DestinationChangedError(JobSpecError):
    """A destination directory is no longer the one an earlier run of the job wrote into."""


#: Errors a retry meets again, by type name: refusals (the item is in the trash already, is a
#: mount point, a special file, the same file as its destination, a conflict...), not causes
#: that may pass. A store keeps an item's error as its type's name and its message.
_REFUSALS = frozenset(
    {
        "TrashError",
        "SpecialFileError",
        "SealedDirError",
        "SourceChangedError",
        "NotOursError",
        "DirConflictError",
        "FileExistsError",
        "SameFileError",
        "IsADirectoryError",
        "NotADirectoryError",
        "ImageError",
        "UnsupportedImageError",
        "ImageTooLargeError",
        "DestinationChangedError",
    }
)
#: What a mount point found in a tree being deleted fails with (`parjobs.ops._delete`), and
#: what is below it is skipped with: another filesystem's files (a home directory
#: bind-mounted into a chroot) are not the tree's; deleting through the mount deleted them.
#: An ``OSError`` with no errno, like a walk's unreadable entry (which may pass): its text
#: tells the refusal apart (`may_pass`).
MOUNTED = "a mount point (a filesystem is mounted there)"
MOUNT_POINT = (
    f"{MOUNTED}: neither it nor anything in it deleted (name what is in it, or unmount it first)"
)
#: The same refusal by a move across filesystems (`parjobs.ops._move`): moving a tree copies
#: it, then removes the source; through the mount that moved the mounted filesystem's files
#: out of the place they were mounted from (as `mv` does).
MOVE_MOUNT_POINT = (
    f"{MOUNTED}: neither it nor anything in it moved (name what is in it, or unmount it first)"
)


def may_pass(error: str, message: str) -> bool:
    """Whether a failed item (its error's type name and message, as a store keeps them) may
    succeed when the job is resumed: a system call's failure (I/O, permissions, disk full)
    may pass once its cause is fixed; a refusal (`_REFUSALS`, a mount point met by a delete or move)
    meets the same answer again. Unknown errors may pass, so ``parjobs resume`` stays
    suggested for them."""
    if error == "OSError":
        return MOUNTED not in message
    return error not in _REFUSALS
