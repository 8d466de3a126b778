"""Wake-ups from a SQLite store: what LISTEN/NOTIFY is to PostgreSQL, cheaply.

SQLite tells nobody that another process committed. Polling the jobs table for new work
each second made a job submitted by one process wait 0.9 s on average for a worker of
another. `SQLiteListener` watches instead: a thread of its own asks its own read-only
connection for ``PRAGMA data_version`` every `INTERVAL` seconds, a number that changes when
another connection has committed (in WAL mode a read of the shared-memory index: no disk
I/O, no lock, a few microseconds). Only then does it count the jobs per status (the
``jobs_status`` index); when the counts moved, a job's status changed somewhere, and it
writes a byte to a pipe the manager waits on in trio (`StoreListener.fileno`). Checkpoints
commit too, but leave the counts alone: like a NOTIFY, a wake-up means a status change, and
a worker does not try a claim on every checkpoint of every job. It is a hint, as NOTIFY is:
a change it misses (two that cancel out in the counts) is found by the slow poll.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading

#: Seconds between two looks at ``data_version``: the wake-up's added latency, half that
#: on average.
INTERVAL = 0.05


class SQLiteListener:
    """Status-change wake-ups of the SQLite store at ``path`` (see the module)."""

    def __init__(self, path: str) -> None:
        uri = pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, timeout=1.0, check_same_thread=False)
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._stop = threading.Event()
        self._version = self._data_version()
        self._counts = self._status_counts()
        self._thread = threading.Thread(target=self._watch, name="parjobs-sqlite-watch")
        self._thread.daemon = True  # a manager that never closes must not hold the exit
        self._thread.start()

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _status_counts(self) -> list[tuple[str, int]]:
        rows = self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return [(str(status), int(n)) for status, n in rows]

    def _watch(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                version = self._data_version()
                if version == self._version:
                    continue
                self._version = version
                counts = self._status_counts()
            except sqlite3.Error:
                continue  # busy, or the file is gone: the manager's poll goes on
            if counts != self._counts:
                self._counts = counts
                with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
                    os.write(self._write, b"!")

    def fileno(self) -> int:
        return self._read

    def ping(self) -> bool:
        """Nothing to ask: the watch is a thread of this process, not a far end."""
        return False

    def drain(self) -> list[str]:
        """A non-empty list (no ids: SQLite does not say which job) after a status change."""
        try:
            woken = os.read(self._read, 4096)
        except BlockingIOError:
            return []
        return [""] if woken else []

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        os.close(self._read)
        os.close(self._write)
