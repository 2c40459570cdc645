"""Training examples that stay on disk: an index over JSONL files, read lazily by every process.

A stage with ``streaming = true`` never holds its examples in memory. One pass over the files
writes an index of fixed-width arrays, memory-mapped afterwards::

    offsets.bin   int64  (n,)    byte offset of each example's line in its file
    files.bin     int32  (n,)    which file
    tasks.bin     int32  (n,)    task id (names in meta.json, sorted)
    keys.bin      uint32 (n, 2)  crc32 of the query and of the first positive (0 = none)
    by_task.bin   int64  (n,)    example ids grouped by task (task t: task_starts[t]..[t+1])
    meta.json     the files (path, size, mtime), counts, task names

The batch planner (``store_sampler.py``) works on task ids and text hashes only; a
``DataLoader`` worker reads an example by seeking to its offset. Resident memory therefore
does not grow with the number of examples (benchmarks/bench_streaming.py measures it).
The index is rebuilt when a file's size or modification time changes; blank lines are
skipped and counted, a malformed line stops the build with its file and line number.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from kalm_rag.errors import InvalidInputError
from kalm_trainer.data.schema import TrainingExample, example_from_dict

__all__ = ["ExampleIndex", "IndexedExamples", "build_index", "files_identity", "open_index"]

_FORMAT = 1
_FLUSH_ROWS = 1 << 20


def files_identity(files: Sequence[Path]) -> list[dict[str, Any]]:
    """What the index depends on: each file's absolute path, size and modification time."""
    out = []
    for path in files:
        if not path.is_file():
            raise InvalidInputError(f"data file not found: {path}")
        stat = path.stat()
        out.append({"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


def _crc(text: object) -> int:
    return zlib.crc32(text.encode("utf-8")) if isinstance(text, str) and text else 0


class _Columns:
    """Append-only column files, flushed every ``_FLUSH_ROWS`` rows (bounded memory)."""

    def __init__(self, folder: Path) -> None:
        names = ("offsets", "files", "tasks", "keys")
        self.handles = {name: open(folder / f"{name}.bin", "wb") for name in names}  # noqa: SIM115
        self.buffers = {"offsets": array("q"), "files": array("i"), "tasks": array("i"), "keys": array("I")}
        self.rows = 0

    def add(self, offset: int, file: int, task: int, query: int, positive: int) -> None:
        self.buffers["offsets"].append(offset)
        self.buffers["files"].append(file)
        self.buffers["tasks"].append(task)
        self.buffers["keys"].extend((query, positive))
        self.rows += 1
        if len(self.buffers["offsets"]) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        for name, buffer in self.buffers.items():
            buffer.tofile(self.handles[name])
            del buffer[:]

    def close(self) -> None:
        self.flush()
        for handle in self.handles.values():
            handle.close()


def build_index(files: Sequence[Path], folder: Path) -> dict[str, Any]:
    """Index ``files`` into ``folder`` (written in a temporary sibling, then renamed)."""
    identity = files_identity(files)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    columns = _Columns(tmp)
    task_ids: dict[str, int] = {}
    blank = 0
    try:
        for file_no, path in enumerate(files):
            with open(path, "rb") as handle:
                offset = 0
                for number, line in enumerate(handle, start=1):
                    start, offset = offset, offset + len(line)
                    if not line.strip():
                        blank += 1
                        continue
                    try:
                        raw = json.loads(line)
                        task = raw.get("task", "default")
                        positives = raw.get("positives") or [None]
                    except (ValueError, AttributeError) as exc:
                        raise InvalidInputError(
                            f"{path}:{number}: not a JSON example object ({exc})"
                        ) from None
                    if not isinstance(task, str):
                        raise InvalidInputError(f"{path}:{number}: 'task' must be a string")
                    tid = task_ids.setdefault(task, len(task_ids))
                    columns.add(start, file_no, tid, _crc(raw.get("query")), _crc(positives[0]))
    finally:
        columns.close()
    names = sorted(task_ids)
    count = columns.rows
    _renumber_tasks(tmp, count, [names.index(t) for t in task_ids])
    starts = _group_by_task(tmp, count, len(names))
    meta = {
        "format": _FORMAT,
        "files": identity,
        "count": count,
        "blank_lines": blank,
        "tasks": names,
        "task_starts": starts,
        "seconds": round(time.perf_counter() - started, 3),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, folder)
    return meta


def _renumber_tasks(folder: Path, count: int, new_ids: list[int]) -> None:
    """First-seen task ids -> ids in sorted-name order (the planner visits tasks by name)."""
    if count == 0:
        return
    tasks = np.memmap(folder / "tasks.bin", dtype=np.int32, mode="r+", shape=(count,))
    table = np.asarray(new_ids, dtype=np.int32)
    for lo in range(0, count, _FLUSH_ROWS):
        tasks[lo : lo + _FLUSH_ROWS] = table[tasks[lo : lo + _FLUSH_ROWS]]
    tasks.flush()


def _group_by_task(folder: Path, count: int, n_tasks: int) -> list[int]:
    """Counting sort of example ids by task, chunk by chunk (stable, bounded memory)."""
    by_task_path = folder / "by_task.bin"
    if count == 0:
        by_task_path.write_bytes(b"")
        return [0] * (n_tasks + 1)
    tasks = np.memmap(folder / "tasks.bin", dtype=np.int32, mode="r", shape=(count,))
    totals = np.zeros(n_tasks, dtype=np.int64)
    for lo in range(0, count, _FLUSH_ROWS):
        totals += np.bincount(tasks[lo : lo + _FLUSH_ROWS], minlength=n_tasks)
    starts = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)
    cursor = starts[:-1].copy()
    by_task = np.memmap(by_task_path, dtype=np.int64, mode="w+", shape=(count,))
    for lo in range(0, count, _FLUSH_ROWS):
        chunk = np.asarray(tasks[lo : lo + _FLUSH_ROWS])
        order = np.argsort(chunk, kind="stable")
        sorted_tasks = chunk[order]
        for task in np.unique(sorted_tasks):
            left, right = np.searchsorted(sorted_tasks, [task, task + 1])
            ids = order[left:right] + lo
            by_task[cursor[task] : cursor[task] + len(ids)] = ids
            cursor[task] += len(ids)
    by_task.flush()
    return [int(s) for s in starts]


IntArray = npt.NDArray[np.int64]


class ExampleIndex:
    """The memory-mapped arrays of one built index."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta: dict[str, Any] = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        n = int(self.meta["count"])
        self.count = n
        self.files = [Path(f["path"]) for f in self.meta["files"]]
        self.task_names: list[str] = list(self.meta["tasks"])
        self.task_starts: list[int] = list(self.meta["task_starts"])
        self.offsets = self._map("offsets", np.int64, (n,))
        self.file_ids = self._map("files", np.int32, (n,))
        self.tasks = self._map("tasks", np.int32, (n,))
        self.keys = self._map("keys", np.uint32, (n, 2))
        self.by_task = self._map("by_task", np.int64, (n,))

    def _map(self, name: str, dtype: Any, shape: tuple[int, ...]) -> Any:
        if self.count == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(self.folder / f"{name}.bin", dtype=dtype, mode="r", shape=shape)

    def members(self, task: int) -> Any:
        """Example ids of task ``task`` (a memory-mapped slice)."""
        return self.by_task[self.task_starts[task] : self.task_starts[task + 1]]


def _index_is_current(folder: Path, files: Sequence[Path]) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(meta.get("format") == _FORMAT and meta.get("files") == files_identity(files))


def open_index(
    files: Sequence[Path],
    folder: Path,
    *,
    build: bool = True,
    wait_s: float = 0.0,
    failed: Path | None = None,
) -> ExampleIndex:
    """The index of ``files`` in ``folder``: reused when current, else built (``build``) or
    waited for (another process builds it; polled without a timeout when ``wait_s`` is 0)."""
    files = [Path(f) for f in files]
    if _index_is_current(folder, files):
        return ExampleIndex(folder)
    if build:
        build_index(files, folder)
        return ExampleIndex(folder)
    from kalm_trainer.waiting import wait_until

    what = f"the index of {len(files)} file(s) in {folder}"
    wait_until(lambda: _index_is_current(folder, files), what, timeout_s=wait_s, failed=failed)
    return ExampleIndex(folder)


class IndexedExamples(torch.utils.data.Dataset[TrainingExample]):
    """A map-style dataset over an :class:`ExampleIndex`: item ``i`` is read and validated from
    its file when asked for. Picklable (file handles are reopened in each DataLoader worker)."""

    def __init__(self, index: ExampleIndex) -> None:
        self.index = index
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.index.count

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.index.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.index = ExampleIndex(state["folder"])
        self._handles = {}
        self._pid = os.getpid()

    def _handle(self, file_id: int) -> Any:
        if self._pid != os.getpid():  # forked worker: never share a file position
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(file_id)
        if handle is None:
            handle = self._handles[file_id] = open(self.index.files[file_id], "rb")  # noqa: SIM115
        return handle

    def __getitem__(self, item: int) -> TrainingExample:
        if not 0 <= item < self.index.count:
            raise IndexError(f"example {item} is outside [0, {self.index.count})")
        handle = self._handle(int(self.index.file_ids[item]))
        handle.seek(int(self.index.offsets[item]))
        line = handle.readline()
        try:
            return example_from_dict(json.loads(line))
        except (ValueError, InvalidInputError) as exc:
            path = self.index.files[int(self.index.file_ids[item])]
            raise InvalidInputError(f"{path} at byte {int(self.index.offsets[item])}: {exc}") from None

    def tasks_of(self, items: Sequence[int]) -> list[str]:
        return [self.index.task_names[int(self.index.tasks[i])] for i in items]
