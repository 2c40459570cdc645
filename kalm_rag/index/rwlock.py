"""A small readers-writer lock: many concurrent searches, one exclusive writer.

Searches in hnswlib and numpy release the GIL, so letting readers overlap is worth it; a
writer (add, delete, save of mutable state) waits for readers to leave and blocks new ones,
so a search never sees a half-applied update (id map, payloads and vectors out of step).
Writers are preferred so a steady stream of searches cannot starve an ``add``. Not reentrant.

Every search enters and leaves the read side, so its uncontended path is one C-level mutex
round trip each way; the Condition is touched only when someone has to wait.
"""

from __future__ import annotations

import threading


class ReadWriteLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._read_side = _ReadSide(self)
        self._write_side = _WriteSide(self)

    def read(self) -> _ReadSide:
        """``with lock.read():`` shared access."""
        return self._read_side

    def write(self) -> _WriteSide:
        """``with lock.write():`` exclusive access."""
        return self._write_side


class _ReadSide:
    __slots__ = ("_rw",)

    def __init__(self, rw: ReadWriteLock) -> None:
        self._rw = rw

    def __enter__(self) -> None:
        rw = self._rw
        with rw._mutex:
            if not rw._writer and not rw._waiting_writers:  # the usual case: no writer about
                rw._readers += 1
                return
        with rw._cond:
            while rw._writer or rw._waiting_writers:
                rw._cond.wait()
            rw._readers += 1

    def __exit__(self, *exc_info: object) -> None:
        rw = self._rw
        with rw._mutex:
            rw._readers -= 1
            wake = not rw._readers and rw._waiting_writers
        if wake:  # the last reader out lets a waiting writer in
            with rw._cond:
                rw._cond.notify_all()


class _WriteSide:
    __slots__ = ("_rw",)

    def __init__(self, rw: ReadWriteLock) -> None:
        self._rw = rw

    def __enter__(self) -> None:
        rw = self._rw
        with rw._cond:
            rw._waiting_writers += 1
            try:
                while rw._writer or rw._readers:
                    rw._cond.wait()
            finally:
                rw._waiting_writers -= 1
            rw._writer = True

    def __exit__(self, *exc_info: object) -> None:
        rw = self._rw
        with rw._cond:
            rw._writer = False
            rw._cond.notify_all()
