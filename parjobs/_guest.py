"""Run trio code inside an asyncio program, on the same thread: trio's *guest mode*.

`run_trio_guest` starts ``trio.lowlevel.start_guest_run`` on the running asyncio loop: asyncio
stays the host and keeps running its own tasks, while trio schedules its tasks through
``loop.call_soon`` and waits for its I/O in a helper thread. This is the way to use the trio
API of parjobs (``open_manager``, ``JobHandle.progress`` ...) from an asyncio application
without a second event-loop thread; `BlockingManager` is the alternative that needs no trio
code at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import outcome
import trio

T = TypeVar("T")


class _GuestRun:
    """What the asyncio side needs to cancel the trio side."""

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False

    def request_cancel(self) -> None:
        self.cancel_requested = True
        if self.token is not None:  # else the run will see the flag when it starts
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self._cancel)

    def _cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


async def run_trio_guest(async_fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run ``await async_fn(*args)`` in trio, as a guest of the running asyncio loop, and
    return its result (or raise its exception) to the awaiting asyncio task.

    Both loops share the thread, so asyncio tasks go on while the trio function runs.
    Cancelling the awaiting asyncio task cancels the trio function and waits for it to
    unwind before re-raising `asyncio.CancelledError`. Only one trio run can live in a
    thread: do not start a second one while the first is running.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
    guest = _GuestRun()

    async def trio_main() -> T:
        guest.token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            guest.scope = scope
            if guest.cancel_requested:
                scope.cancel()
            return await async_fn(*args)
        raise asyncio.CancelledError("the trio guest run was cancelled by its asyncio host")

    def done_callback(result: outcome.Outcome[T]) -> None:  # called on the host thread
        if not finished.done():
            finished.set_result(result)

    trio.lowlevel.start_guest_run(
        trio_main,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        run_sync_soon_not_threadsafe=loop.call_soon,
        done_callback=done_callback,
        # asyncio installs its own wakeup fd (for add_signal_handler); trio must not steal it.
        host_uses_signal_set_wakeup_fd=True,
    )
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(finished)
            break
        except asyncio.CancelledError as exc:  # never leave the trio run behind
            cancelled = cancelled or exc
            guest.request_cancel()
    if cancelled is not None:
        if isinstance(result, outcome.Error) and not isinstance(
            result.error, asyncio.CancelledError
        ):
            raise result.error  # it failed while unwinding: a real error, do not hide it
        raise cancelled
    return result.unwrap()


__all__ = ["run_trio_guest"]
