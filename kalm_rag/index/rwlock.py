"""A small readers-writer lock: many concurrent searches, one exclusive writer.

Searches in hnswlib and numpy release the GIL, so letting readers overlap is worth it; a
writer (add, delete, save of mutable state) waits for readers to leave and blocks new ones,
so a search never sees a half-applied update (id map, payloads and vectors out of step).
Writers are preferred so a steady stream of searches cannot starve an ``add``. Not reentrant.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Guard:
    # Plain __enter__/__exit__ objects: cheaper than @contextmanager on every search.
    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None]) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._release()


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._read = _Guard(self._acquire_read, self._release_read)
        self._write = _Guard(self._acquire_write, self._release_write)

    def read(self) -> _Guard:
        """``with lock.read():`` shared access."""
        return self._read

    def write(self) -> _Guard:
        """``with lock.write():`` exclusive access."""
        return self._write

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True

    def _release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()
