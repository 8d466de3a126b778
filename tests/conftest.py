import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio.testing

sys.path.insert(0, os.path.dirname(__file__))


def _cache_bytecode_outside_the_tree() -> None:
    """With ``PYTHONDONTWRITEBYTECODE`` set (this environment sets it, to keep ``.pyc`` files
    out of the source trees), every test process compiled parjobs and the tests from source
    each time, and pytest rewrote the asserts of all 200 test modules again in each xdist
    worker: 8 s of CPU per worker before its first test, 3 s with the cache. The suite's
    processes (its workers and every Python child they start) keep their bytecode in a
    cache of their own outside the tree instead (``PYTHONPYCACHEPREFIX``), in the user's
    cache directory. Set before the workers start (they and their children inherit it); a
    prefix chosen by the user is kept."""
    if not sys.dont_write_bytecode or sys.pycache_prefix is not None:
        return
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    prefix = os.path.join(cache, "parjobs-tests", "pycache")
    try:
        os.makedirs(prefix, mode=0o700, exist_ok=True)
    except OSError:
        return  # (compiled from source, as before)
    sys.pycache_prefix, sys.dont_write_bytecode = prefix, False
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_cache_bytecode_outside_the_tree()

#: The CLI keeps the code it compiles for generated methods in $XDG_CACHE_HOME/parjobs
#: (`parjobs._codecache`): the suite's CLI processes share one of their own (tests/cli's
#: `env` gives each test its own), never the user's ~/.cache.
_CACHE_HOME = tempfile.mkdtemp(prefix="parjobs-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_HOME, ignore_errors=True)


#: The longest tests (1-8 s each on 2 cores: a full run's ``--durations=0``, session 22; the
#: earlier list's kept), longest first. They run before all others, and xdist (``--dist
#: loadgroup``, pyproject.toml) hands tests out one at a time from the front to a worker
#: holding two or fewer: the two workers share the long ones and end
#: together, instead of one running a long test alone at the end (the order within a module
#: is kept otherwise). The xdist groups (the chromium and Dask modules, ~20 and ~30 s) go out
#: before them, whole, one to each worker.
FIRST = (
    "tests/ops/test_thumbnail.py::test_big_decodes_wait_for_each_other_within_the_memory_budget",
    "tests/reliability/test_rel_second_runner.py::test_second_runner_matrix",
    "tests/test_benchmarks_smoke.py::test_tiny_run_writes_results",
    "tests/test_setup.py::test_a_rebuild_reuses_fresh_extensions_and_compiles_a_stale_one",
    "tests/reliability/test_rel_stress.py::test_fifty_jobs_under_random_requests",
    "tests/reliability/test_rel_faults.py::test_store_on_a_full_disk_pauses_the_job_then_it_resumes_by_itself",
    "tests/core/test_scheduler.py::test_job_timeout_counts_run_time_over_resumes",
    "tests/server/test_serve_cli.py::test_a_job_its_failing_store_paused_is_resumed_by_the_restart",
    "tests/reliability/test_rel_crash.py::test_random_kills",
    "tests/server/test_remote_cli.py::test_copy_to_completion_then_jobs_and_show_as_printed_locally",
    "tests/reliability/test_rel_faults.py::test_a_job_waiting_for_its_failing_store_retries_with_a_backoff",
    "tests/core/test_context_checkpoints.py::test_after_kill_9_only_tasks_in_flight_and_the_last_interval_run_again",
    "tests/ops/test_thumbnail.py::test_kill_9_mid_job_then_resume_completes_without_temp_files",
    "tests/reliability/test_rel_faults.py::test_a_dependant_waits_for_its_prerequisites_end_to_be_recorded",
    "tests/core/test_jobstore_claim.py::test_a_postgresql_worker_listens_again_once_the_database_is_back",
    "tests/server/test_remote_cli.py::test_an_empty_id_names_no_job_through_the_server",
    "tests/reliability/test_rel_store_heal.py::test_closing_a_manager_whose_job_waits_for_a_dead_store_is_prompt",
    "tests/reliability/test_rel_faults.py::test_store_locked_too_long_is_a_clear_error_and_nothing_is_lost",
    "tests/reliability/test_rel_faults.py::test_a_job_its_failing_store_paused_resumes_by_itself_once_it_works",
    "tests/reliability/test_rel_names.py::test_two_thumbnail_jobs_and_two_hash_outputs_at_once",
    "tests/reliability/test_rel_faults.py::test_closing_as_a_job_waits_to_record_its_end_leaves_it_resumable",
    "tests/server/test_remote_cli.py::test_jobs_prune_through_the_server",
    "tests/reliability/test_rel_names.py::test_two_jobs_writing_one_big_file_name_never_publish_each_others_bytes",
    "tests/server/test_serve_cli.py::test_serve_on_postgresql_shows_a_job_a_worker_runs",
    "tests/reliability/test_rel_faults.py::test_an_end_written_whose_answer_was_lost_is_recognized_once",
    "tests/core/test_context_checkpoints.py::test_a_job_whose_checkpoints_keep_failing_pauses_with_the_reason",
    "tests/test_docs.py::test_python_blocks_in_docs_run",
    "tests/reliability/test_rel_faults.py::test_a_worker_takes_over_a_store_paused_job_once_its_manager_is_gone",
    "tests/server/test_remote_cli.py::test_hash_through_the_server_prints_the_digests_from_the_item_log",
    "tests/reliability/test_rel_second_runner.py::test_a_runner_that_lost_its_lease_stops_and_writes_nothing_more",
    "tests/reliability/test_rel_faults.py::test_store_locked_too_long_raises_a_plain_store_error",
    "tests/reliability/test_rel_store_heal.py::test_a_pause_in_the_healing_manager_as_it_queues_the_job_wins",
    "tests/reliability/test_rel_store_heal.py::test_a_person_steering_it_elsewhere_as_it_heals_wins",
    "tests/test_ops_exports.py::test_the_package_loads_a_job_class_on_first_use",
    "tests/server/test_remote_cli.py::test_ctrl_c_as_the_job_is_submitted_pauses_it_as_locally",
    "tests/reliability/test_rel_second_runner.py::test_cancel_of_a_stopped_runner_is_not_cancelled_until_it_stops",
    "tests/ops/test_decodebudget.py::test_a_task_waiting_for_the_budget_is_not_timed_out_by_the_wait",
    "tests/reliability/test_rel_faults.py::test_a_store_failing_as_a_job_ends_records_its_end_once_it_works",
    "tests/cli/test_worker.py::test_a_killed_workers_copy_is_resumed_by_another_byte_identical",
    "tests/cli/test_worker.py::test_resume_detach_queues_a_paused_copy_for_a_worker_nothing_redone",
    "tests/test_benchmarks_smoke.py::test_bench_trees_runs_each_scenario_per_tree_and_reports_medians",
    "tests/server/test_serve_cli.py::test_sigterm_pauses_and_the_restart_resumes_only_what_the_shutdown_paused",
    "tests/server/test_remote_cli.py::test_ctrl_c_pauses_through_the_api_then_resume_pause_cancel",
    "tests/cluster/test_cluster_parts.py::test_the_cli_runs_a_job_on_a_local_cluster_from_the_environment",
    "tests/cli/test_worker.py::test_four_workers_run_100_jobs_each_once_within_capacities",
    "tests/server/test_remote_cli.py::test_show_items_and_undo_through_the_server_as_locally",
    "tests/cli/test_worker.py::test_unusable_postgresql_stores_are_clear_errors_with_nothing_touched",
    "tests/cli/test_ops_commands.py::test_demo_runs",
    "tests/reliability/test_rel_crash.py::test_hook_kills",
    "tests/reliability/test_rel_crash.py::test_dupes_killed_mid_checkpoint_resumes_each_unfinished_run_once",
)


def pytest_sessionstart(session):
    """Stop at once on a stale build of a C extension: parjobs would ignore it without a
    word and do that work in Python, and the tests of the C paths would fail far from the
    cause ("hook never reached")."""
    import glob

    from parjobs.ops import _hashing, _smallfiles

    here = os.path.dirname(_smallfiles.__file__)
    for name, loaded in (
        ("_fastcopy", _smallfiles.fastcopy),
        ("_fastscan", _hashing.fastscan),
    ):
        built = glob.glob(os.path.join(here, f"{name}*.so"))
        if built and loaded is None:
            pytest.exit(
                f"{built[0]} does not match this source (a stale build): "
                "run 'python3 setup.py build_ext --inplace' (or pip install -e . again)",
                returncode=3,
            )


def pytest_collection_modifyitems(items):
    """Move the tests of `FIRST` to the front, in its order (a stable sort)."""
    rank = {name: i for i, name in enumerate(FIRST)}
    # (an xdist_group's tests have "@group" appended to their ids on the workers)
    items.sort(key=lambda item: rank.get(item.nodeid.split("@")[0].split("[")[0], len(FIRST)))


def pytest_generate_tests(metafunc):
    """Tests marked ``both_stores`` run on SQLite and on PostgreSQL (`store_path` is then a
    fresh database's URL), but those also marked ``one_store``: timing logic above the store
    (retry back-off, timeouts) on a real clock with PostgreSQL's autojump threshold took a
    minute of the suite's five and tests nothing of the store."""
    definition = metafunc.definition
    if (
        "store_path" in metafunc.fixturenames
        and definition.get_closest_marker("both_stores")
        and not definition.get_closest_marker("one_store")
    ):
        metafunc.parametrize("store_path", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def store_path(request, tmp_path, monkeypatch):
    if getattr(request, "param", "sqlite") == "postgresql":
        monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path / "job-files"))
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "jobs.sqlite")


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL cluster per test process (see tests/_pg.py). Skipped, saying why,
    only outside CI when the server binaries or psycopg are missing."""
    import _pg

    missing = None
    if _pg.binaries() is None:
        missing = "PostgreSQL server binaries not found (apt install postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing = "psycopg not installed (pip install -e '.[postgres]')"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with _pg.server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server):
    """The URL of a new, empty database on the test cluster."""
    return pg_server.url(pg_server.create_db())


@pytest.fixture
def autojump_clock(request, monkeypatch):
    """Virtual time that jumps after 20 ms of real idleness, but never while a store call is
    in flight: the manager's store calls run in a worker thread, and trio counts a task
    waiting for a thread as idle, so on a loaded machine (load 20+) a call descheduled past
    the threshold let virtual time jump and timers fire while the store was still working (a
    job's 0.1 s sleep ended before the next job was even claimed). While one is in flight the
    threshold is infinite. It is 20 ms on PostgreSQL too: it was 100 ms there for the round
    trip of a store call, which the hold covers since (a NOTIFY that comes late is backed by
    the manager's request poll); 100 ms a jump made the PostgreSQL variants of the
    scheduler, cross-cancel and manager tests wait 15 s in all (session 22: they passed at
    load 19-28 with 20 ms, twice)."""
    from parjobs._manager_core import ManagerCore

    threshold = 0.02
    clock = trio.testing.MockClock(autojump_threshold=threshold)
    real_db = ManagerCore._db
    in_flight = [0]

    async def db_holding_time(self, fn, *args, **kwargs):
        in_flight[0] += 1
        clock.autojump_threshold = math.inf
        try:
            return await real_db(self, fn, *args, **kwargs)
        finally:
            in_flight[0] -= 1
            if not in_flight[0]:
                clock.autojump_threshold = threshold

    monkeypatch.setattr(ManagerCore, "_db", db_holding_time)
    return clock


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on another filesystem than tmp_path (/dev/shm), or skip."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is not a separate filesystem here")
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="parjobs-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
