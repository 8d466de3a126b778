"""The per-item record: what one item of a job did (`ItemRecord`), as a file manager needs it
to select the new files, tell the user what happened, and undo.

A task records its items through `TaskContext.record`; they travel with the task's outcome
into the checkpoint batch that marks the task completed, so a resumed job neither loses nor
repeats them. On that way a record is a plain tuple (`ItemRow`), not an `ItemRecord`: a copy
notes one per file, and the store packs a checkpoint's rows at once (`parjobs._itemlog`);
an `ItemRecord` is built only where a record is read or shown. Data only, no I/O.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, cast

#: The actions the operations record (a user job may record any short word of its own).
ACTIONS = (
    "copied",  # a new file at ``destination`` (the name did not exist before)
    "renamed-as",  # like copied, under a new name (``destination``) because the name existed
    "replaced",  # written over an existing ``destination``
    "linked",  # a copy's hard link to the copy of another name of the file (``detail``: as moved)
    "skipped",  # nothing written (``detail``: why)
    "present",  # found already in place on resume (maybe not this job's: never undone)
    "moved",  # ``source`` now at ``destination``
    "source-dir",  # a move's source directory as found (``detail``: its metadata, for an undo)
    "trashed",  # ``source`` now in the trash at ``destination`` (``detail``: its .trashinfo)
    "deleted",  # ``source`` removed for good
    "hashed",  # ``detail``: the digest
    "thumbnailed",  # ``destination``: the thumbnail written
    "restored",  # undo: ``source`` (in the trash, or a moved item) back at ``destination``
    "removed",  # undo: ``source``, a file the job created, removed
    "failed",  # ``error`` says why (the item's error, with ``stage`` and ``index``)
)


#: The ``detail`` of a record about a directory (a copy's new directory: undo removes it
#: last, and only when empty).
DIRECTORY = "directory"


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class Written:
    """The identity of a file right after a job wrote it: undo removes only a file that still
    has it (same inode, size and modification time), i.e. nobody changed it since."""

    size: int
    mtime_ns: int
    inode: int


#: A `Written`'s fields as a plain tuple (size, mtime_ns, inode): what the C group copy hands
#: back per file, put into item rows as it is (no `Written` built per file of a group).
Identity = tuple[int, int, int]


@typing.final
@dataclasses.dataclass(frozen=True, slots=True, init=False)
class ItemRecord:
    """What one item did: ``action`` (see `ACTIONS`) on ``source``, the ``destination``
    actually written, ``bytes``, a ``detail`` (a digest, a trash entry, a skip reason) and the
    ``error`` of a failed item. ``stage`` and ``index`` name the task (and its error in
    ``manager.errors``); ``seq`` is the record's place in the job's log (0 until stored)."""

    action: str
    source: str
    destination: str | None = None
    bytes: int = 0
    detail: str | None = None
    error: str | None = None
    written: Written | None = None
    stage: str = "default"
    index: int = -1
    seq: int = 0

    def __init__(
        self,
        action: str,
        source: str,
        destination: str | None = None,
        bytes: int = 0,
        detail: str | None = None,
        error: str | None = None,
        written: Written | None = None,
        stage: str = "default",
        index: int = -1,
        seq: int = 0,
    ) -> None:
        # What the generated frozen __init__ does, through the slots' own setters (about
        # half the time): a copy builds one record per file.
        s = _RECORD_SETTERS
        s[0](self, action)
        s[1](self, source)
        s[2](self, destination)
        s[3](self, bytes)
        s[4](self, detail)
        s[5](self, error)
        s[6](self, written)
        s[7](self, stage)
        s[8](self, index)
        s[9](self, seq)

    def to_json(self) -> dict[str, Any]:
        """A JSON object (the CLI's ``--json`` and the HTTP API)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "action": self.action,
            "source": self.source,
            "destination": self.destination,
            "bytes": self.bytes,
            "detail": self.detail,
            "error": self.error,
            "stage": self.stage,
            "index": self.index,
        }
        w = self.written
        out["written"] = None if w is None else dataclasses.asdict(w)
        return out


#: The slot setters of `ItemRecord`'s fields, in order (its ``__init__`` uses them).
_RECORD_SETTERS: tuple[Callable[[Any, Any], None], ...] = tuple(
    getattr(ItemRecord, f.name).__set__ for f in dataclasses.fields(ItemRecord)
)


#: An item record as tasks note it and checkpoints carry it: ``(action, source, destination,
#: bytes, detail, error, size, mtime_ns, inode, stage, index)``, the `ItemRecord` fields in
#: their order with ``written`` spread over three (None when nothing was written) and no
#: ``seq`` (the store numbers rows as it appends them). A tuple of plain values is cheap to
#: build, and the garbage collector stops tracking it: a small-file copy notes one per file.
ItemRow = tuple[
    str, str, str | None, int, str | None, str | None, int | None, int | None, int | None, str, int
]


def item_row(record: ItemRecord) -> ItemRow:
    """The `ItemRow` of ``record`` (its ``seq`` left out)."""
    w = record.written
    return (
        record.action,
        record.source,
        record.destination,
        record.bytes,
        record.detail,
        record.error,
        *((None, None, None) if w is None else (w.size, w.mtime_ns, w.inode)),
        record.stage,
        record.index,
    )


def row_record(row: ItemRow, seq: int = 0) -> ItemRecord:
    """The `ItemRecord` of ``row``, numbered ``seq``."""
    action, source, destination, nbytes, detail, error, size, mtime_ns, inode, stage, index = row
    written = None if size is None else Written(size, cast(int, mtime_ns), cast(int, inode))
    return ItemRecord(
        action, source, destination, nbytes, detail, error, written, stage, index, seq
    )


def record_from_json(data: dict[str, Any]) -> ItemRecord:
    """The `ItemRecord` of `ItemRecord.to_json` output (the CLI's client of the HTTP API)."""
    w = data.get("written")
    return ItemRecord(
        action=data["action"],
        source=data["source"],
        destination=data.get("destination"),
        bytes=data.get("bytes", 0),
        detail=data.get("detail"),
        error=data.get("error"),
        written=None if w is None else Written(w["size"], w["mtime_ns"], w["inode"]),
        stage=data.get("stage", "default"),
        index=data.get("index", -1),
        seq=data.get("seq", 0),
    )


def fingerprint(st: Any) -> Written:
    """The `Written` identity of an ``os.stat_result``."""
    return Written(st.st_size, st.st_mtime_ns, st.st_ino)
