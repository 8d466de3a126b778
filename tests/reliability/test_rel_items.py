"""The item log across a kill -9 (#14.2): a job killed in a child process, then resumed here,
has one record per item — none lost, none twice — and its undo still works."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
from rel_helpers import resume_to_end, run_child

import parjobs
from parjobs import JobStatus

FILES = 240


def _tree(root: Path) -> list[str]:
    paths = []
    for d in range(6):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(FILES // 6):
            path = root / f"d{d}" / f"f{i:03}"
            path.write_bytes(os.urandom(100 + i))
            paths.append(str(path))
    return paths


#: Halfway through and near the end of the run, whose sleeps alone take 240 x 0.015 / 4 = 0.9 s.
@pytest.mark.parametrize("kill_after", [0.45, 0.8])
async def test_items_after_kill_and_resume_are_complete_and_unique(
    tmp_path: Path, kill_after: float
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    dst.mkdir()
    store = str(tmp_path / "jobs.sqlite")
    config = {
        "store": store,
        "action": "submit",
        "job": {"type": "copy", "spec": {"sources": [str(src)], "destination": str(dst)}},
        "workers": 4,
        "task_sleep": 0.015,
        "group_size": 4,
    }
    run = run_child(config, tmp_path, kill_after=kill_after)
    assert run.killed, "the child ended before it was killed: make the job slower"
    async with parjobs.open_manager(store) as m:
        before = await m.item_count(run.job_id or "")
    assert 0 < before < FILES + 7, "kill landed before the first checkpoint or after the end"
    info = await resume_to_end(store)
    assert info.status is JobStatus.COMPLETED
    async with parjobs.open_manager(store) as m:
        items = await m.items(info.id)
        per_source = collections.Counter(r.source for r in items)
        assert sorted(s for s in per_source if s in set(files)) == sorted(files)  # none lost
        assert max(per_source.values()) == 1, per_source.most_common(3)  # none twice
        assert {r.action for r in items} <= {"copied", "present"}
        for r in items:
            assert r.destination is not None and os.path.lexists(r.destination)
        assert [r.seq for r in items] == list(range(1, len(items) + 1))
        # What the killed run wrote but did not record is "present", never undone; the rest is.
        present = {r.destination for r in items if r.action == "present"}
        undo = await m.undo(info.id)
        result = await undo.result()
        assert result["failed"] == 0
    left = {str(p) for p in dst.rglob("*") if p.is_file()}
    assert left == present
