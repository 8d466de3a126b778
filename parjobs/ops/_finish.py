"""`FinishDirs`: the last task of a copy or move run, which sweeps leftover temporaries and
gives destination directories their sources' modes and times, deepest first."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .._task import Task, TaskContext
from ._errors import CopyError
from ._metadata import apply_dir_metadata
from ._transfer import CopyDone, CopyPlan
from ._walk import Entry


@dataclasses.dataclass(eq=False)
class FinishDirs(Task[CopyDone]):
    """The last step of a run: sweep leftover temporaries (when a run may have left some),
    then apply source modes and times to the destination directories, deepest first.

    ``dirs``: the walked source directories, read through `SourceDirs.dir_at`. With
    ``walked_mtime`` (a move) a destination directory gets the mtime its source had when
    walked, since moving the files out changed it since."""

    index: int
    plan: CopyPlan
    dirs: list[Entry]
    sweep: Callable[[], object] | None
    after: Callable[[TaskContext], None] | None = None
    walked_mtime: bool = False

    @property
    def weight(self) -> int:
        return 1 << 30  # may take a while: deliver earlier outcomes first

    def label(self) -> str:
        return f"finishing {self.plan.tree.display(b'')}"

    def run(self, tc: TaskContext) -> CopyDone:
        if self.sweep is not None:
            self.sweep()
        plan, failures = self.plan, []
        for entry in sorted(self.dirs, key=lambda d: -d.rel.count(b"/")):
            tc.check()
            rel, src = entry.rel, entry.path
            try:
                fd = plan.tree.acquire(rel, create=False)
            except OSError:  # never created (conflict, skipped): nothing to finish
                continue
            try:
                options = plan.options
                with plan.src_dirs.dir_at(src, rel, "read") as at:
                    apply_dir_metadata(
                        src,
                        fd,
                        plan.follow,
                        options.preserve_xattrs,
                        options.preserve_owner,
                        options.durable,
                        entry.mtime_ns if self.walked_mtime else None,
                        at=at,
                    )
            except FileNotFoundError:
                # The source directory is gone: a move's earlier run applied its metadata,
                # then removed it, and was killed before recording this step.
                continue
            except OSError as exc:
                failures.append(f"{plan.tree.display(rel)}: {exc.strerror or exc}")
            finally:
                plan.tree.release(rel)
        if self.after is not None:
            self.after(tc)
        if failures:
            raise CopyError(
                f"could not set mode/times of {len(failures)} directories; first: {failures[0]}"
            )
        return CopyDone("finish")
