"""trio hosted as a guest of asyncio (`run_trio_guest`): a manager runs a job while asyncio
tasks go on, and errors and cancellation cross between the two loops.

Every test here is a plain ``def``: the code under test runs its own trio loop as a guest of
asyncio, never the test's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio
from _jobs import CountJob, read_log

import parjobs
from parjobs import Progress
from parjobs._guest import run_trio_guest


def test_trio_runs_as_a_guest_of_asyncio_while_asyncio_tasks_go_on(store_path, tmp_path):
    log = str(tmp_path / "log")

    async def trio_side() -> Any:
        async with parjobs.open_manager(store_path, workers=4) as manager:
            handle = await manager.submit(CountJob(n=100, log=log, sleep=0.005, chunks=2))
            snaps = [snap async for snap in handle.progress()]
            return await handle.result(), snaps[-1]

    async def main() -> tuple[Any, Progress, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        result, final = await run_trio_guest(trio_side)
        task.cancel()
        return result, final, ticks

    result, final, ticks = asyncio.run(main())
    assert result == {"done_this_run": 100, "runs": 1}
    assert final.status == "completed"
    assert ticks >= 3, "asyncio kept running while trio worked"
    assert sorted(read_log(log)) == list(range(100))


def test_guest_errors_and_asyncio_cancellation_cross_over():
    unwound: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            unwound.append("trio")

    async def fails() -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError("from trio")

    async def main() -> None:
        with pytest.raises(KeyError, match="from trio"):
            await run_trio_guest(fails)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_trio_guest(forever), 0.05)
        assert unwound == ["trio"], "the trio run unwound before asyncio went on"
        assert await run_trio_guest(trio.to_thread.run_sync, lambda: 42) == 42

    asyncio.run(main())
