"""Semi-homogeneous task batches planned from an on-disk index (``streaming = true`` stages).

The same rules as :mod:`kalm_trainer.data.sampler` (one task per batch, the last
``batch_size * (1 - ratio)`` items shuffled across batches, what is left of every task pooled
into mixed batches, no query or first positive twice in a batch, every rank slicing the same
global batches), computed with numpy on task ids and
crc32 text hashes instead of Python objects: planning 10M examples takes seconds and the plan
lives in a memory-mapped file, so nothing per example stays in RAM. Items that cannot be
placed (fewer than a batch left after the mixed batches, unfixable duplicates) are counted in
``dropped``; unlike the in-memory sampler, no smaller last batch is trained.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kalm_rag.errors import ConfigError
from kalm_trainer.data.sampler import SemiHomogeneousBatchSampler
from kalm_trainer.data.store import ExampleIndex

__all__ = ["IndexedBatchSampler", "plan_indexed_batches"]

logger = logging.getLogger("kalm_trainer")

_REPAIR_TRIES = 64


def _duplicate_rows(batches: np.ndarray, keys: Any) -> np.ndarray:
    """Row numbers of batches in which a non-zero text hash occurs twice."""
    if batches.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    hashes = np.sort(np.asarray(keys[batches.reshape(-1)]).reshape(batches.shape[0], -1), axis=1)
    same = (hashes[:, 1:] == hashes[:, :-1]) & (hashes[:, 1:] != 0)
    return np.flatnonzero(same.any(axis=1))


def _key_set(keys: Any, item: int) -> set[int]:
    return {int(k) for k in keys[item] if k}


def _repair_task(rows: np.ndarray, rest: list[int], keys: Any) -> tuple[np.ndarray, list[int]]:
    """Re-fill each batch holding a duplicate from the task's left-over items; a batch that
    cannot be completed is removed (its items join the left-overs)."""
    keep_rows = np.ones(rows.shape[0], dtype=bool)
    for row in _duplicate_rows(rows, keys):
        seen: set[int] = set()
        kept: list[int] = []
        for item in rows[row].tolist():
            item_keys = _key_set(keys, item)
            if seen.isdisjoint(item_keys):
                kept.append(item)
                seen |= item_keys
            else:
                rest.append(item)
        waiting: list[int] = []
        while len(kept) < rows.shape[1] and rest:
            item = rest.pop(0)
            item_keys = _key_set(keys, item)
            if seen.isdisjoint(item_keys):
                kept.append(item)
                seen |= item_keys
            else:
                waiting.append(item)
        rest.extend(waiting)
        if len(kept) == rows.shape[1]:
            rows[row] = kept
        else:
            keep_rows[row] = False
            rest.extend(kept)
    return rows[keep_rows], rest


def _mix_tails(batches: np.ndarray, mixed: int, keys: Any, rng: np.random.Generator) -> int:
    """Shuffle the last ``mixed`` columns across batches, then swap away duplicates (in place).
    Returns the number of duplicates that could not be swapped away."""
    if mixed == 0 or batches.shape[0] < 2:
        return 0
    size = batches.shape[1]
    tails = batches[:, size - mixed :].reshape(-1)
    batches[:, size - mixed :] = tails[rng.permutation(tails.shape[0])].reshape(-1, mixed)
    left = 0
    for row in _duplicate_rows(batches, keys):
        for slot in range(size - mixed, size):
            others = [_key_set(keys, i) for s, i in enumerate(batches[row].tolist()) if s != slot]
            if not any(o & _key_set(keys, int(batches[row, slot])) for o in others):
                continue
            for _ in range(_REPAIR_TRIES):
                other_row = int(rng.integers(batches.shape[0]))
                other_slot = int(rng.integers(size - mixed, size))
                if other_row == row:
                    continue
                a, b = int(batches[row, slot]), int(batches[other_row, other_slot])
                here = set().union(*others)
                there = set().union(
                    *(_key_set(keys, i) for s, i in enumerate(batches[other_row].tolist()) if s != other_slot)
                )
                if here.isdisjoint(_key_set(keys, b)) and there.isdisjoint(_key_set(keys, a)):
                    batches[row, slot], batches[other_row, other_slot] = b, a
                    break
            else:
                left += 1
    return left


def plan_indexed_batches(
    index: ExampleIndex, *, batch_size: int, ratio: float = 1.0, seed: int = 0, epoch: int = 0
) -> tuple[np.ndarray, dict[str, int]]:
    """All global batches of one epoch as an (n_batches, batch_size) int64 array of example ids,
    deterministic per (seed, epoch); and counts (``mixed_batches``, ``mixed_items``, ``dropped``,
    ``duplicate_conflicts``)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"ratio must be within [0, 1], got {ratio}")
    rng = np.random.default_rng([seed, epoch])
    pieces: list[np.ndarray] = []
    leftovers: list[int] = []
    for task in range(len(index.task_names)):  # tasks by name: independent of file order
        members = np.asarray(index.members(task))
        order = members[rng.permutation(members.shape[0])]
        full = order.shape[0] // batch_size * batch_size
        rows = order[:full].reshape(-1, batch_size).copy()
        rows, rest = _repair_task(rows, order[full:].tolist(), index.keys)
        pieces.append(rows)
        leftovers += rest
        del members, order
    # what is left of every task (and tasks smaller than a batch) forms mixed batches
    pool = np.asarray(leftovers, dtype=np.int64)[rng.permutation(len(leftovers))]
    full = pool.shape[0] // batch_size * batch_size
    mixed_rows, rest = _repair_task(
        pool[:full].reshape(-1, batch_size).copy(), pool[full:].tolist(), index.keys
    )
    pieces.append(mixed_rows)
    dropped = len(rest)
    batches = np.concatenate(pieces) if pieces else np.zeros((0, batch_size), dtype=np.int64)
    del pieces
    batches = batches[rng.permutation(batches.shape[0])]
    mixed = int(round(batch_size * (1.0 - ratio), 9))
    conflicts = _mix_tails(batches, mixed, index.keys, rng)
    stats = {
        "mixed_batches": int(mixed_rows.shape[0]),
        "mixed_items": int(mixed_rows.size),
        "dropped": dropped,
        "duplicate_conflicts": conflicts,
    }
    return batches, stats


class IndexedBatchSampler(SemiHomogeneousBatchSampler):
    """``batch_sampler`` over an :class:`ExampleIndex`: this rank's slice of each global batch.

    The epoch's plan is computed once per epoch and kept in a memory-mapped file under
    ``plan_dir`` (default: the index folder), one per rank, so it costs no resident memory.
    """

    def __init__(
        self,
        index: ExampleIndex,
        *,
        batch_size: int,
        ratio: float = 1.0,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        plan_dir: Path | None = None,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is outside [0, {num_replicas})")
        if batch_size % num_replicas:
            raise ConfigError(f"global batch_size {batch_size} is not divisible by {num_replicas} processes")
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"ratio must be within [0, 1], got {ratio}")
        self.index = index
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.per_rank = batch_size // num_replicas
        self.ratio = ratio
        self.seed = seed
        self.epoch = 0
        self.plan_dir = plan_dir or index.folder
        self.stats: dict[str, int] = {}
        self._slice: tuple[int, Any] | None = None

    def _plan_file(self) -> Path:
        tag = f"{self.seed}-{self.epoch}-{self.batch_size}-{self.ratio}-{self.rank}of{self.num_replicas}"
        return self.plan_dir / f"plan-{tag}-{os.getpid()}.npy"

    def rank_plan(self) -> Any:
        """This rank's (n_batches, per_rank) slice of the epoch's plan (memory-mapped)."""
        if self._slice is None or self._slice[0] != self.epoch:
            batches, self.stats = plan_indexed_batches(
                self.index, batch_size=self.batch_size, ratio=self.ratio, seed=self.seed, epoch=self.epoch
            )
            start = self.rank * self.per_rank
            path = self._plan_file()
            mapped = np.lib.format.open_memmap(
                path, mode="w+", dtype=np.int64, shape=(batches.shape[0], self.per_rank)
            )
            mapped[:] = batches[:, start : start + self.per_rank]
            mapped.flush()
            del batches, mapped
            plan = np.load(path, mmap_mode="r")
            os.unlink(path)  # the mapping stays valid; nothing is left behind on disk
            self._slice = (self.epoch, plan)
            if self.stats["dropped"] or self.stats["duplicate_conflicts"]:
                logger.info("epoch %d plan: %s", self.epoch, self.stats)
        return self._slice[1]

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.rank_plan()
        for row in range(plan.shape[0]):
            yield [int(i) for i in plan[row]]

    def __len__(self) -> int:
        return int(self.rank_plan().shape[0])

    def steps(self, epochs: float, max_steps: int) -> int:
        return max_steps if max_steps > 0 else math.ceil(epochs * len(self))
