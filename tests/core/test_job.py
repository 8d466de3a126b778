"""Job types: specs (to JSON and back, checked field by field), the registry and its
entry points, stored jobs that cannot be loaded."""

from __future__ import annotations

import contextlib
import importlib.metadata
import sqlite3
from typing import Literal

import pytest
from _jobs import CountJob, ValidatedJob, read_log

import parjobs
from parjobs import JobStatus, _job


@parjobs.job_type("test-typed", version=2)
class TypedJob(parjobs.Job):
    paths: list[str]
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    ratio: float = 1.0
    pair: tuple[int, str] = (1, "x")

    async def run(self, ctx: parjobs.JobContext) -> str:
        return self.mode

    def validate(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise parjobs.JobSpecError("test-typed: limit must be >= 0")


def test_spec_round_trip():
    job = TypedJob(paths=["a", "b"], mode="b", limit=3, pair=(2, "y"))
    spec = job.to_spec()
    assert spec == {"paths": ["a", "b"], "mode": "b", "limit": 3, "ratio": 1.0, "pair": [2, "y"]}
    assert TypedJob.from_spec(spec) == job


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"paths": "a"}, r"test-typed\.paths: expected a list, got str 'a' \(a list of one"),
        ({"paths": [1]}, r"test-typed\.paths\[0\]: expected a string, got int"),
        ({"paths": [], "mode": "c"}, r"test-typed\.mode: 'c' is not one of 'a', 'b'"),
        ({"paths": [], "limit": "3"}, r"test-typed\.limit: '3' does not match"),
        ({"paths": [], "limit": True}, r"test-typed\.limit"),
        ({"paths": [], "limit": -1}, r"limit must be >= 0"),
        ({"paths": [], "extra": 1}, r"unknown field\(s\) extra"),
        ({}, r"missing field 'paths'"),
        ({"paths": [], "pair": [1]}, r"expected 2 items"),
        ([], r"spec must be an object"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(parjobs.JobSpecError, match=message):
        TypedJob.from_spec(spec)


async def test_wrong_field_types_are_named_at_submit_before_validate_sees_them(
    store_path, tmp_path
):
    """``sources="/data/x"`` reached validate(), which walked the string character by
    character and said "cannot copy the root directory '/'"; ``destination=5`` raised a raw
    TypeError from path code. Both are named now, and nothing is stored or touched."""
    from parjobs.ops import CopyJob

    src = tmp_path / "x"
    src.mkdir()
    dst = tmp_path / "dst"
    async with parjobs.open_manager(store_path) as manager:
        with pytest.raises(parjobs.JobSpecError) as info:
            await manager.submit(CopyJob(sources=str(src), destination=str(dst)))  # type: ignore[arg-type]
        assert str(info.value) == (
            f"copy.sources: expected a list, got str {str(src)!r} (a list of one is [{str(src)!r}])"
        )
        with pytest.raises(
            parjobs.JobSpecError, match=r"^copy\.destination: expected a string, got int$"
        ):
            await manager.submit(CopyJob(sources=[str(src)], destination=5))  # type: ignore[arg-type]
        assert await manager.list_jobs() == []
    assert not dst.exists()


async def test_a_submit_validates_once_in_a_worker_thread_and_a_resume_again(tmp_path):
    """The spec is validated once per submit, off the event loop (validate may stat and
    resolve paths), and not again as its first run starts; a resumed run validates the
    stored spec again (what it names may have changed meanwhile). A job checked by
    `dump_job` beforehand (as the CLI does before it opens the store) is not validated by
    the manager at all."""
    log = tmp_path / "log"
    async with parjobs.open_manager(str(tmp_path / "jobs.sqlite")) as manager:
        handle = await manager.submit(ValidatedJob(log=str(log)))
        assert await handle.wait() == JobStatus.COMPLETED
        assert log.read_text().splitlines() == ["validate thread", "run"]
        log.unlink()
        paused = await manager.submit(ValidatedJob(log=str(log)), start=False)
        await (await manager.resume(paused.id)).wait()
        assert log.read_text().splitlines() == ["validate thread", "validate thread", "run"]
        log.unlink()
        dumped = _job.dump_job(ValidatedJob(log=str(log)))
        assert log.read_text() == "validate loop\n"  # (this test called it on the loop)
        assert await (await manager.submit(dumped)).wait() == JobStatus.COMPLETED
        assert log.read_text().splitlines() == ["validate loop", "run"]


def test_a_spec_of_an_older_version_without_upgrade_spec_names_both_versions():
    """It said only "unknown field(s) path", as if the spec were corrupt."""
    with pytest.raises(parjobs.JobLoadError) as info:
        _job.load_job("test-typed", 1, '{"path": "a"}')
    message = str(info.value)
    assert "'test-typed' version 1" in message and "version 2" in message
    assert "no upgrade_spec" in message and "unknown field(s) path" in message

    @parjobs.job_type("test-upgraded", version=3)
    class Upgraded(parjobs.Job):
        paths: list[str]

        @classmethod
        def upgrade_spec(cls, spec, from_version):
            return {"paths": [spec["path"]]} if from_version == 2 else spec

    assert _job.load_job("test-upgraded", 2, '{"path": "a"}') == Upgraded(paths=["a"])
    with pytest.raises(
        parjobs.JobLoadError, match=r"version 1 .* version 3 after its upgrade_spec"
    ):
        _job.load_job("test-upgraded", 1, '{"path": "a"}')


def test_registering_a_second_class_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):

        @parjobs.job_type("test-typed")
        class Other(parjobs.Job):
            pass


async def test_unregistered_job_is_refused(store_path):
    class Loose(parjobs.Job):
        async def run(self, ctx):
            return None

    async with parjobs.open_manager(store_path) as manager:
        with pytest.raises(parjobs.JobSpecError, match="not registered"):
            await manager.submit(Loose())


async def test_bad_stored_jobs_fail_alone_and_the_others_run(store_path, tmp_path):
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store_path) as manager:
        good = await manager.submit(CountJob(n=5, log=log), start=False)
        ids = {}
        for name, (type_name, version, spec) in {
            "unknown": ("no-such-type", 1, "{}"),
            "newer": ("test-count", 99, '{"n": 1, "log": "x"}'),
            "corrupt": ("test-count", 1, '{"n": 1, "log": '),
            "edited": ("test-count", 1, '{"n": "many", "log": "x"}'),
        }.items():
            info, _ = manager.store.insert_job(f"bad-{name}", type_name, version, spec)
            manager.store.transition(info.id, JobStatus.PAUSED)
            ids[name] = info.id
        handles = [await manager.resume(i) for i in ids.values()]
        handles.append(await manager.resume(good.id))
        for h in handles:
            await h.wait()
        infos = {i: await manager.get(i) for i in ids.values()}
        assert (await good.info()).status is JobStatus.COMPLETED
    assert sorted(read_log(log)) == [0, 1, 2, 3, 4]
    assert "unknown job type 'no-such-type'" in (infos[ids["unknown"]].error or "")
    assert "newer than this code" in (infos[ids["newer"]].error or "")
    assert "corrupt JSON" in (infos[ids["corrupt"]].error or "")
    assert "test-count.n: expected an integer, got str" in (infos[ids["edited"]].error or "")
    assert all(i.status is JobStatus.FAILED for i in infos.values())


def test_job_types_are_found_through_entry_points(monkeypatch) -> None:
    """A stored job of a type nobody imported is loaded through the ``parjobs.job_types``
    entry point named like it (the core never names parjobs.ops)."""
    calls: list[str] = []

    class FakeEntryPoint:
        name = "test-plugin"
        value = "plugin:PluginJob"

        def load(self) -> object:
            calls.append(self.name)

            @parjobs.job_type("test-plugin")
            class PluginJob(parjobs.Job):
                n: int = 1

            return PluginJob

    monkeypatch.setattr(
        _job,
        "_entry_points",
        lambda: [FakeEntryPoint()],
    )
    monkeypatch.delitem(_job._REGISTRY, "test-plugin", raising=False)
    job = _job.load_job("test-plugin", 1, '{"n": 3}')
    assert calls == ["test-plugin"] and job.to_spec() == {"n": 3}
    assert _job.lookup_job_type("test-plugin") is type(job)
    assert calls == ["test-plugin"]  # loaded once
    with pytest.raises(parjobs.JobLoadError, match="entry-point group"):
        _job.load_job("test-nobody", 1, "{}")


def test_a_broken_plugin_does_not_stop_the_others(monkeypatch, caplog) -> None:
    """Loading every job type (as the CLI does to list or resume jobs) skips, with a warning,
    a plug-in whose module fails; asking for that type by name still says why."""

    class Broken:
        name = "test-broken"
        value = "nowhere:Nothing"

        def load(self) -> object:
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr(_job, "_entry_points", lambda: [Broken()])
    with caplog.at_level("WARNING", logger="parjobs"):
        _job.load_job_types()
    assert "'test-broken' (nowhere:Nothing) failed: No module named 'nowhere'" in caplog.text
    with pytest.raises(parjobs.JobLoadError, match=r"test-broken.*No module named"):
        _job.lookup_job_type("test-broken")


def test_the_built_in_operations_are_declared_as_entry_points() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group="parjobs.job_types")}
    assert {"copy", "move", "delete", "hash", "duplicates", "thumbnails"} <= names, (
        "run `pip install -e .` so the entry points of pyproject.toml are installed"
    )


@parjobs.job_type("test-own-json")
class OwnJsonJob(parjobs.Job):
    """A result with a JSON text of its own (`Job.result_json`): compact separators."""

    async def run(self, ctx):
        return {"a": [1, 2]}

    def result_json(self, result):
        return '{"a":[1,2]}'


async def test_a_result_is_stored_as_the_text_its_job_encodes_it_to(tmp_path):
    store = str(tmp_path / "jobs.sqlite")
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(OwnJsonJob())
        assert await handle.result() == {"a": [1, 2]}
    with contextlib.closing(sqlite3.connect(store)) as db:
        (text,) = db.execute("SELECT result FROM jobs").fetchone()
    assert text == '{"a":[1,2]}'  # json.dumps would write '{"a": [1, 2]}'
    async with parjobs.open_manager(store) as manager:
        assert (await manager.get(handle.id)).result == {"a": [1, 2]}
