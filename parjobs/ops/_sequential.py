"""The plain reference implementation of duplicate finding, `find_duplicates_sequential`,
and the records of its report: the stages and rules of `parjobs.ops._hashing` (its module
docstring) run one file at a time. `DuplicatesJob` finds the same groups in parallel; the
tests compare the two. Apart from `_hashing` so that the commands, which all load it (the
walk's C scan, the hash of a file), do not build these records at start-up.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._fs import FilePath
from ._hashing import (
    _EMPTY_DIGEST,
    CONTENT_ID_SMALL_LIMIT,
    content_id,
    group_by,
    hash_file,
)

__all__ = ["DuplicateGroup", "DuplicateReport", "find_duplicates_sequential"]

PathT = TypeVar("PathT", bound=FilePath)


@dataclass(frozen=True, slots=True)
class DuplicateGroup(Generic[PathT]):
    """Distinct files (distinct inodes) with identical content.

    ``digest`` is what proved it: the full XXH3-128 `hash_file` digest for files larger than
    `CONTENT_ID_SMALL_LIMIT`, otherwise the `content_id` (which then covers every byte).
    """

    size: int
    digest: str
    paths: tuple[PathT, ...]

    @property
    def reclaimable(self) -> int:
        """Bytes freed by keeping one copy and deleting the others."""
        return self.size * (len(self.paths) - 1)


@dataclass(frozen=True, slots=True)
class DuplicateReport(Generic[PathT]):
    """The duplicate groups found, largest files first."""

    groups: tuple[DuplicateGroup[PathT], ...]

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes freed by keeping one file per group."""
        return sum(group.reclaimable for group in self.groups)

    @property
    def duplicate_files(self) -> int:
        """Files that could be deleted: every group's members but one."""
        return sum(len(group.paths) - 1 for group in self.groups)


def find_duplicates_sequential(paths: Iterable[PathT]) -> DuplicateReport[PathT]:
    """Find duplicate files among ``paths`` with no parallelism (the reference algorithm).

    Walks nothing: ``paths`` are the candidate files. Paths that are not regular files
    (symlinks, directories, special files) are ignored; hard links count once and empty files
    form one group (see the module docstring). Groups are ordered by size, largest first, then
    by digest. I/O errors propagate.
    """
    seen_inodes: set[tuple[int, int]] = set()
    files: list[tuple[PathT, int]] = []
    for path in paths:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen_inodes:
            continue
        seen_inodes.add((st.st_dev, st.st_ino))
        files.append((path, st.st_size))

    groups: list[DuplicateGroup[PathT]] = []
    for size, same_size in group_by(files, lambda f: f[1]).items():
        if size == 0:
            groups.append(DuplicateGroup(0, _EMPTY_DIGEST, tuple(p for p, _ in same_size)))
            continue
        with_ids = [(p, content_id(p, size=size)) for p, _ in same_size]
        for cid, same_id in group_by(with_ids, lambda f: f[1]).items():
            if size <= CONTENT_ID_SMALL_LIMIT:  # the id covered every byte
                groups.append(DuplicateGroup(size, cid, tuple(p for p, _ in same_id)))
                continue
            hashed = [(p, hash_file(p)) for p, _ in same_id]
            for digest, same in group_by(hashed, lambda f: f[1]).items():
                groups.append(DuplicateGroup(size, digest, tuple(p for p, _ in same)))
    groups.sort(key=lambda g: (-g.size, g.digest))
    return DuplicateReport(tuple(groups))
