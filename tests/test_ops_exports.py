"""The public surface of parjobs.ops: a reviewed list, loaded lazily (no Pillow for a copy)."""

from __future__ import annotations

import subprocess
import sys

import parjobs
import parjobs.ops

OPS_ALL = [
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


def test_ops_all_is_the_reviewed_list() -> None:
    assert sorted(parjobs.ops.__all__) == OPS_ALL
    for name in OPS_ALL:
        assert getattr(parjobs.ops, name) is not None, name


def test_every_ops_error_is_a_parjobs_error() -> None:
    for name in OPS_ALL:
        value = getattr(parjobs.ops, name)
        if name.endswith("Error"):
            assert issubclass(value, parjobs.ParjobsError), name


def _fresh(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return proc.stdout.strip()


def test_importing_the_copy_job_leaves_pillow_out() -> None:
    code = "import sys, parjobs.ops._copy, parjobs.ops._move; print('PIL' in sys.modules)"
    assert _fresh(code) == "False"


def test_the_package_loads_a_job_class_on_first_use() -> None:
    code = (
        "import sys, parjobs.ops as ops; before = 'parjobs.ops._copy' in sys.modules; "
        "ops.CopyJob; print(before, 'parjobs.ops._copy' in sys.modules, 'PIL' in sys.modules)"
    )
    assert _fresh(code) == "False True False"
