"""The memory budget image decodes share within a process.

A thumbnail decodes its source in full (JPEGs are drafted small first), and the ``cpu`` lane
runs one decode per core: a tree of 100 MP PNG or TIFF panoramas would hold about 1 GB per
core at once. Each decode reserves its estimated size (`decoded_bytes`, known from the
header before a byte of pixels is read) from one budget per process, so big decodes wait
for each other. Decodes under a sixteenth of the budget never wait and are not counted:
everyday photos run freely, and memory stays under the budget plus one such decode per
thread. A decode larger than the whole budget waits until no counted decode runs, then runs
alone. Waiters are served in arrival order, so a big decode is never starved by smaller
ones arriving after it. Waiting is not running: a task's timeout does not count it
(`TaskContext.off_clock`), so a big batch never times out images that never began.

The budget is ``$PARJOBS_DECODE_MEMORY`` bytes when set to a positive integer, else
`default_budget` (the smaller of 1 GiB and a quarter of the machine's memory). It is read at
each reservation, so a change applies to the decodes that start after it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import threading
import traceback
from collections.abc import Callable, Iterator

from PIL import Image

from .._environ import positive_or
from .._task import TaskContext

__all__ = ["decode_budget", "decoded_bytes", "default_budget", "reserve"]

_GIB = 1 << 30
#: How often a waiting decode calls its ``check`` (pause, cancel), in seconds; freed memory
#: wakes it at once (``notify_all``).
_POLL = 0.2
#: Modes Pillow stores with one byte per pixel, and with two; all others take four.
_ONE_BYTE = frozenset({"1", "L", "P"})
#: Modes resized as they are: others are converted first, and those with alpha are
#: premultiplied into a copy by the resize, so both hold a second full-size image.
_RESIZED_AS_IS = frozenset({"L", "RGB", "CMYK"})


def default_budget() -> int:
    """The smaller of 1 GiB and a quarter of the physical memory (1 GiB if unknown)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return _GIB
    return min(_GIB, total // 4) if total > 0 else _GIB


def decode_budget() -> int:
    """The budget in bytes: ``$PARJOBS_DECODE_MEMORY`` if a positive integer, else the default."""
    value = positive_or("PARJOBS_DECODE_MEMORY", True, 0)
    return int(value) or default_budget()


def decoded_bytes(im: Image.Image) -> int:
    """Estimated peak memory of decoding and resizing ``im`` (opened, not yet loaded) at its
    current size: a JPEG's draft has already shrunk it."""
    w, h = im.size
    mode = im.mode
    pixel = 1 if mode in _ONE_BYTE else 2 if mode.startswith("I;16") else 4
    second = 0 if mode in _RESIZED_AS_IS and "transparency" not in im.info else 4
    return w * h * (pixel + second)


@functools.cache
def _malloc_trim() -> Callable[[int], object] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def _release_freed_memory() -> None:
    """Give the memory a finished big decode freed back to the system.

    glibc keeps memory freed by a thread in that thread's arena: without this, each thread
    would keep the peak of its own decodes, and one at a time would still add up to one
    big decode per thread."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _Budget:
    """Bytes reserved by the decodes running now, and the queue of those waiting."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._held = 0
        self._queue: collections.deque[object] = collections.deque()

    @contextlib.contextmanager
    def reserve(self, nbytes: int, check: Callable[[], object]) -> Iterator[None]:
        capacity = decode_budget()
        if nbytes < capacity // 16:
            yield
            return
        need = min(nbytes, capacity)
        ticket = object()
        with self._lock, _off_clock(check):
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._held + need > decode_budget():
                    if self._queue[0] is ticket and self._held == 0:
                        break  # alone: runs even if the budget shrank below it meanwhile
                    self._lock.wait(_POLL)  # (woken at once when memory is freed)
                    check()
            finally:
                self._queue.remove(ticket)
                self._lock.notify_all()  # the next in line may fit now
            self._held += need
        try:
            yield
        except BaseException as exc:
            # The finished frames it passed through hold the decoded image: free it now.
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            _release_freed_memory()  # before the next decode can start
            with self._lock:
                self._held -= need
                self._lock.notify_all()


def _off_clock(check: Callable[[], object]) -> contextlib.AbstractContextManager[None]:
    """While a decode waits for the budget, its task's timeout does not run, when ``check``
    is a task's (`TaskContext.off_clock`): a big batch timed out images that never began."""
    owner = getattr(check, "__self__", None)
    return owner.off_clock() if isinstance(owner, TaskContext) else contextlib.nullcontext()


_BUDGET = _Budget()


def reserve(nbytes: int, check: Callable[[], object]) -> contextlib.AbstractContextManager[None]:
    """Hold ``nbytes`` of the process's decode budget for the ``with`` block, waiting (and
    calling ``check``, which may raise to give up) until they fit. A task's ``check``
    (`TaskContext.check`) does not count the wait toward its timeout."""
    return _BUDGET.reserve(nbytes, check)
