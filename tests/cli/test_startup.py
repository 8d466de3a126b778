"""Start-up stays quick: a command imports only what it uses, and nothing waits on the way out.

Each check runs the command line in a fresh interpreter (a subprocess) and looks at
``sys.modules`` when it is done: Pillow only for thumbnails, rich only when drawing on a
terminal, no operation for ``--help`` or ``jobs``.
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys

import pytest
import trio
import trio.testing

from parjobs._progress import ProgressTracker
from parjobs.cli import YOUNG_THRESHOLD
from parjobs.cli._render import LiveRenderer, PlainRenderer, make_renderer

#: Modules a command must not load unless it needs them.
HEAVY = ("PIL", "rich", "parjobs.ops", "httpx", "parjobs.server", "importlib.metadata")
#: The core a command loads to open a manager and run jobs, and trio (parsing needs neither).
CORE = ("trio", "parjobs._manager", "parjobs._store", "parjobs._dispatch", "sqlite3")
#: What a job run here loads only when asked: the cluster lane (with pickle), the blocking
#: facade, process tasks, decimal sizes (dupes' --min-size) and the modules of other commands.
UNUSED_BY_COPY = (
    "parjobs._cluster",
    "parjobs._process",
    "pickle",
    "parjobs._facade",
    "decimal",
    "parjobs.cli._serve",
    "parjobs.cli._undo",
    "parjobs.cli._demo",
    "parjobs.cli._client",
)

_PROBE = """
import json, sys
from parjobs.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _loaded(argv: list[str], cwd: str, **env: str) -> tuple[int, set[str]]:
    """Run the CLI with ``argv`` in a fresh interpreter, stdout a pipe (not a terminal)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    environ.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = proc.stdout.strip().splitlines()[-1]
    report = json.loads(last)
    return report["code"], set(report["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY) and m != "parjobs.ops._fastcopy")


def test_import_cli_loads_nothing_heavy(tmp_path):
    code = "import json, sys, parjobs.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert _heavy(set(json.loads(out))) == []


def _core(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(CORE))


def test_help_loads_no_operation_no_rich_and_no_core(tmp_path):
    """``parjobs --help`` only parses: neither trio nor the manager is loaded."""
    code, modules = _loaded(["--help"], str(tmp_path))
    assert code == 0
    assert _heavy(modules) == []
    assert _core(modules) == []


def test_the_programs_help_loads_no_store_code(tmp_path):
    """The program (`parjobs.cli.run`, not only `main`): ``--help`` loads neither the
    session's module nor what it needs to open a store (dataclasses, the PostgreSQL schema)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "parjobs", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "parjobs.cli._app" in loaded
    assert {"parjobs.cli._session", "parjobs._pgschema", "dataclasses"} & loaded == set()


def test_import_parjobs_loads_only_the_errors():
    """``import parjobs`` (the first step of every command) defers the core to first use."""
    code = (
        "import json, sys, parjobs; before = sorted(sys.modules); parjobs.JobManager; "
        "print(json.dumps([before, sorted(sys.modules)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    before, after = (set(names) for names in json.loads(out))
    assert _core(before) == []
    assert "parjobs._manager" in after


def test_jobs_loads_no_operation(tmp_path):
    """Listing a store that does not exist opens no manager: the core stays unloaded."""
    store = str(tmp_path / "jobs.sqlite")
    code, modules = _loaded(["--store", store, "jobs"], str(tmp_path))
    assert code == 0
    assert _heavy(modules) == []
    assert [m for m in _core(modules) if not m.startswith("trio")] == []


def test_copy_loads_only_the_copy_operation(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"hello")
    (tmp_path / "out").mkdir()
    store = str(tmp_path / "jobs.sqlite")
    code, modules = _loaded(["--store", store, "copy", str(src), str(tmp_path / "out")], "/")
    assert code == 0
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"hello"
    heavy = _heavy(modules)
    assert "parjobs.ops._copy" in heavy
    assert not [m for m in heavy if m.startswith(("PIL", "rich", "parjobs.ops._thumbnail"))]
    assert "importlib.metadata" not in heavy
    assert sorted(m for m in modules if m.startswith(UNUSED_BY_COPY)) == []


@pytest.mark.parametrize("detach", [False, True])
def test_a_command_validates_its_job_once_in_a_worker_thread(tmp_path, monkeypatch, detach):
    """The command validated the job on the event loop, then the manager's submit validated
    it again. Once now, in a worker thread, before the store is opened: a job that does not
    validate creates no store."""
    from parjobs.cli import main
    from parjobs.ops import CopyJob

    on_the_loop: list[bool] = []
    validate = CopyJob.validate

    def logged(job: CopyJob) -> None:
        on_the_loop.append(trio.lowlevel.in_trio_run())
        validate(job)

    monkeypatch.setattr(CopyJob, "validate", logged)
    src, store = tmp_path / "src", tmp_path / "jobs.sqlite"
    src.mkdir()
    (src / "a").write_bytes(b"hello")
    detached = ["--detach"] if detach else []
    argv = ["--store", str(store), "--plain", "copy", *detached, str(src), str(tmp_path / "out")]
    assert main(argv) == 0
    assert on_the_loop == [False]
    store.unlink()
    assert main(["--store", str(store), "copy", str(src), str(src / "in")]) == 2
    assert on_the_loop == [False, False] and not store.exists()


def test_the_program_freezes_its_start_up_objects(tmp_path):
    """Run as the program (``main()``), a command freezes what start-up made (`gc.freeze`):
    the collector then skips it in every collection, at exit too; and it collects the
    youngest generation every `YOUNG_THRESHOLD` allocations, not 700. Called with ``argv`` (a
    library or a test), ``main`` leaves the collector alone."""
    probe = (
        "import gc, sys\nfrom parjobs.cli import main\n"
        "program = sys.argv[2:3] == ['program']\n"
        "sys.argv[1:] = ['--store', sys.argv[1], 'jobs']\n"
        "main(None if program else sys.argv[1:])\n"
        "print(gc.isenabled(), gc.get_threshold()[0], gc.get_freeze_count())\n"
    )
    store = str(tmp_path / "jobs.sqlite")
    got = [
        subprocess.run(
            [sys.executable, "-c", probe, store, *how],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.split()[-3:]
        for how in (["program"], [])
    ]
    assert got[0][0] == "True"  # collecting again (it does not while the imports run)
    assert int(got[0][1]) == YOUNG_THRESHOLD and int(got[0][2]) > 10_000
    assert got[1] == ["True", str(gc.get_threshold()[0]), "0"]


_EXITING = """
import atexit, os, sys, threading
from parjobs.cli import run
atexit.register(lambda: print("atexit handler ran"))
sys.stdout.write("block-buffered, no newline: ")
store = sys.argv[1]
if sys.argv[2:] == ["thread"]:  # not a daemon: the normal exit waits for it, then it writes
    def after_main() -> None:
        threading.main_thread().join()
        with open(store + ".thread", "w") as f:
            f.write("joined")
    threading.Thread(target=after_main).start()
sys.argv[1:] = ["--store", store, "show", "abc"]  # exit 2: no store, no such job
run()
"""


@pytest.mark.parametrize("thread", [False, True])
def test_the_program_exits_after_its_atexit_handlers_with_its_output_flushed(tmp_path, thread):
    """`run` skips the interpreter's teardown, not what the normal exit does for others: the
    `atexit` handlers run, buffered output is written, the exit code is the command's; and
    while a thread that is not a daemon runs, the normal exit waits for it as always."""
    store = str(tmp_path / "jobs.sqlite")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run(
        [sys.executable, "-c", _EXITING, store, *(["thread"] if thread else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "block-buffered, no newline: atexit handler ran\n"
    assert "no job with id 'abc'" in proc.stderr
    assert (tmp_path / "jobs.sqlite.thread").exists() == thread
    if thread:
        assert (tmp_path / "jobs.sqlite.thread").read_text() == "joined"


def test_make_renderer_plain_without_terminal(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    renderer = make_renderer(json_mode=False, plain=False, stream=io.StringIO())
    assert isinstance(renderer, PlainRenderer)


@pytest.mark.parametrize("variable", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_make_renderer_still_asks_rich_when_forced(monkeypatch, variable):
    """The shortcut past rich must not change rich's answer where rich would draw."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv(variable, "1")
    monkeypatch.delenv("TERM", raising=False)
    renderer = make_renderer(json_mode=False, plain=False, stream=io.StringIO())
    assert isinstance(renderer, LiveRenderer)


def test_final_snapshot_is_not_held_back_by_the_pacing():
    """The subscriber paces snapshots ~10/s, but the final one comes as soon as the tracker
    closes: a fixed 0.1 s sleep there made every short command wait on its way out."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    times: list[float] = []

    async def main() -> None:
        tracker = ProgressTracker("job", clock=trio.current_time)
        tracker.set_status("running")
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.sleep(0.01)
                tracker.set_status("completed")
                tracker.close()

            nursery.start_soon(close_soon)
            async for snap in tracker.subscribe():
                times.append(trio.current_time())
                assert snap.status in ("running", "completed")

    trio.run(main, clock=clock)
    assert len(times) == 2
    assert times[1] - times[0] < 0.05, times


def test_resume_imports_only_the_job_type_it_resumes(tmp_path):
    """``resume`` of a copy job loads the copy operation from its entry point, not every
    installed job type (Pillow with the thumbnails)."""
    from parjobs import open_manager
    from parjobs.ops import CopyJob

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"resumed")
    (tmp_path / "out").mkdir()
    store = str(tmp_path / "jobs.sqlite")

    async def make() -> str:
        async with open_manager(store) as manager:
            job = CopyJob(sources=[str(src)], destination=str(tmp_path / "out"))
            return (await manager.submit(job, start=False)).id

    job_id = trio.run(make)
    code, modules = _loaded(["--store", store, "resume", job_id], "/")
    assert code == 0
    assert (tmp_path / "out" / "src" / "a.txt").read_bytes() == b"resumed"
    assert "parjobs.ops._copy" in modules
    assert not [m for m in modules if m.startswith(("PIL", "parjobs.ops._thumbnail"))]


_SPAWNS = """
import json, os, subprocess, sys
spawned = []
start = subprocess.Popen.__init__
def recorded(self, args, *rest, **kwargs):
    spawned.append(list(args))
    start(self, args, *rest, **kwargs)
subprocess.Popen.__init__ = recorded
from parjobs.cli import main
code = main(["--store", sys.argv[1], "copy", sys.argv[2], sys.argv[3]])
from trio._core._thread_cache import set_os_thread_name
print(json.dumps([code, spawned, set_os_thread_name is not None]))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="the GNU C library's answer",
)
def test_a_command_starts_no_process_to_import_trio(tmp_path):
    """``import trio`` looks the pthread library up to name its threads, and
    ``ctypes.util.find_library`` runs ``/sbin/ldconfig -p`` for that: a fork and exec in every
    command. Under glibc the command answers it (`parjobs.cli._trio`): no process is started,
    and trio still names its threads."""
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "out").mkdir()
    args = [str(tmp_path / "jobs.sqlite"), str(tmp_path / "a.txt"), str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-c", _SPAWNS, *args], capture_output=True, text=True, timeout=120
    )
    code, spawned, names = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0, proc.stderr
    assert spawned == []
    assert names
    assert (tmp_path / "out" / "a.txt").read_text() == "a"
