import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


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
def autojump_clock(request):
    """Virtual time that jumps only after 20 ms of real idleness. The manager's store calls
    run in a worker thread; with a zero threshold every such call would let virtual time jump
    to the next deadline, so timers would fire while real work is still in progress. A
    PostgreSQL call is a round trip to another process: on a loaded machine one may take
    longer, so with that store the threshold is 100 ms."""
    import trio.testing

    callspec = getattr(request.node, "callspec", None)
    on_pg = callspec is not None and callspec.params.get("store_path") == "postgresql"
    return trio.testing.MockClock(autojump_threshold=0.1 if on_pg else 0.02)
