"""ManagerConfig: one keyword-only, validated configuration for every way of opening a
manager."""

from __future__ import annotations

import pytest

import parjobs
from parjobs._config import DEFAULT_QUEUES, ManagerConfig


async def test_bad_manager_settings_are_refused(store_path):
    for kwargs in ({"workers": 0}, {"workers": -2}, {"max_running": 0}, {"lanes": {"io": 0}}):
        with pytest.raises(ValueError, match=r"must be >= 1|at least 1"):
            async with parjobs.open_manager(store_path, **kwargs):
                pass


def test_config_is_keyword_only_frozen_and_validated_at_once() -> None:
    with pytest.raises(TypeError):
        ManagerConfig(4)  # type: ignore[call-arg]  # keyword-only, on purpose
    config = ManagerConfig(workers=4, queues={"bulk": 2})
    with pytest.raises(AttributeError):
        config.workers = 5  # type: ignore[misc]
    assert config.queue_capacities() == {**DEFAULT_QUEUES, "default": 4, "bulk": 2}
    assert config.lane_limits()["io"] >= 16
    with pytest.raises(ValueError, match="retention"):
        ManagerConfig(retention=-1)
    with pytest.raises(ValueError, match="queue 'bulk'"):
        ManagerConfig(queues={"bulk": 0})


async def test_open_manager_takes_a_config_and_keyword_overrides(store_path) -> None:
    config = ManagerConfig(workers=3, max_running=2)
    async with parjobs.open_manager(store_path, config, max_running=1) as manager:
        assert manager.config == ManagerConfig(workers=3, max_running=1)
        assert (manager.workers, manager.max_running) == (3, 1)
