"""`parjobs.ops._probe` without a cluster: what a probe never replaces or removes, and what a
thumbnail walk leaves out. (Its use on a cluster: tests/cluster/test_cluster_probe.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parjobs.ops import ForeignDirError
from parjobs.ops._probe import check_path, place, probe_name, remove

TOKEN = b"fedcba9876543210"
OTHER = b"0123456789abcdef"


def test_a_probe_is_placed_without_replacing_anything(tmp_path: Path) -> None:
    """What is in the way of a probe's name and is not one (a directory, a symlink, a file
    with other content) is left alone, and the job cannot start; one of this job's own (a
    killed run's, even empty: killed before its text) is taken as its own."""
    token = TOKEN
    name = os.fsdecode(probe_name(token))
    for kind in ("dir", "symlink", "file"):
        where = tmp_path / kind
        where.mkdir()
        if kind == "dir":
            (where / name).mkdir()
        elif kind == "symlink":
            (where / name).symlink_to(tmp_path / "target")
        else:
            (where / name).write_bytes(b"a user's file")
        with pytest.raises(ForeignDirError, match="left alone"):
            place(where, token)
        assert not (tmp_path / "target").exists()
    assert (tmp_path / "file" / name).read_bytes() == b"a user's file"
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / name).write_bytes(b"")
    place(tmp_path / "own", token)
    assert (tmp_path / "own" / name).read_bytes() == b""


def test_only_the_jobs_own_probe_is_removed(tmp_path: Path) -> None:
    """`remove` takes the job's probe only: never another job's, nor a user's file of the
    name that is not a probe (other content), nor what a symlink of that name points to."""
    place(tmp_path, TOKEN)
    place(tmp_path, OTHER)
    check_path(tmp_path, TOKEN)
    remove(tmp_path, TOKEN)
    assert sorted(os.listdir(tmp_path)) == [os.fsdecode(probe_name(OTHER))]
    with pytest.raises(ForeignDirError, match="not the manager's"):
        check_path(tmp_path, TOKEN)
    with pytest.raises(ForeignDirError, match="not the manager's"):
        check_path(tmp_path / "missing", TOKEN)
    user = tmp_path / os.fsdecode(probe_name(TOKEN))
    user.write_bytes(b"a user's file")
    remove(tmp_path, TOKEN)
    assert user.read_bytes() == b"a user's file"
    user.unlink()
    target = tmp_path / "target"
    target.write_bytes(b"parjobs: a job")
    user.symlink_to(target)
    remove(tmp_path, TOKEN)
    assert user.is_symlink() and target.read_bytes() == b"parjobs: a job"


def test_removing_a_probe_keeps_its_directorys_times(tmp_path: Path) -> None:
    """A copy made the directory and gave it its source's mtime (a path map's directory
    below the copy's root holds the probe); the probe's removal, after the copy's last
    step, made it now."""
    place(tmp_path, TOKEN)
    os.utime(tmp_path, ns=(1_000_000_000_123, 946_684_800_000_000_007))
    remove(tmp_path, TOKEN)
    assert os.stat(tmp_path).st_mtime_ns == 946_684_800_000_000_007
    assert os.listdir(tmp_path) == []


def test_a_thumbnail_walk_leaves_probes_out_of_its_output_directory() -> None:
    """An output directory inside the photos (``--out`` one of their directories) holds
    the job's probe while it runs on a cluster: not counted as "not an image" (a result
    that a local run's would not match); a user's file so named elsewhere is walked."""
    from parjobs.ops._thumbnail import _own_output

    name = probe_name(OTHER)
    assert _own_output(b"/p/out/" + name, (b"/p/out/",))
    assert not _own_output(b"/p/out/2023/" + name, (b"/p/out/",))
