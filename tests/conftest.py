import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "jobs.sqlite")
