"""``import trio`` without the child process it starts to name its threads.

Trio looks the POSIX threads library up once as it is imported
(``ctypes.util.find_library("pthread")``, to name its worker threads with
``pthread_setname_np``), and on Linux that runs ``/sbin/ldconfig -p`` and searches its
output: a fork and an exec in every command, ~2 ms of CPU between the two processes and 2-20
ms by the clock on the 2-core VM of docs/benchmarks.md, all for an answer that never changes
under the GNU C library: the soname ``libpthread.so.0`` (a library of its own until glibc
2.34, a stub since whose functions ``dlsym`` finds in libc through it). `import_trio` gives
trio that answer while it is imported, so trio loads the same library and names its threads
as before; any other name, and every lookup on another C library (musl, macOS), goes to
``find_library`` as usual.
"""

from __future__ import annotations

import os
import sys

#: What ``ldconfig -p`` answers for "pthread" under the GNU C library.
GLIBC_PTHREAD = "libpthread.so.0"


def _glibc() -> bool:
    """True when this process runs on the GNU C library."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc ")
    except (ValueError, OSError):  # (a platform without the name)
        return False


def import_trio() -> None:
    """``import trio``, its pthread lookup answered without ``ldconfig`` under glibc."""
    if "trio" in sys.modules or sys.platform != "linux" or not _glibc():
        import trio

        return
    import ctypes.util

    find = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        return GLIBC_PTHREAD if name == "pthread" else find(name)

    setattr(ctypes.util, "find_library", find_library)  # noqa: B010 (mypy: a module's function)
    try:
        import trio  # noqa: F401
    finally:
        setattr(ctypes.util, "find_library", find)  # noqa: B010
