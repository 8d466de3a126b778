import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "jobs.sqlite")


@pytest.fixture
def autojump_clock():
    """Virtual time that jumps only after 20 ms of real idleness. The manager's store calls
    run in a worker thread; with a zero threshold every such call would let virtual time jump
    to the next deadline, so timers would fire while real work is still in progress."""
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0.02)
