"""Semi-homogeneous task batch sampling (KaLM v1).

Each global batch is drawn from ONE task (in-batch negatives of the same task are harder and
never compare, say, an STS pair against a retrieval corpus). Then the last
``int(batch_size * (1 - ratio))`` items of every batch are shuffled across batches: ratio 1
gives pure task batches, ratio 0 random batches. No text (query or positive) appears twice in a
batch, since a duplicate would be a false in-batch negative.

Nothing is dropped (as in the KaLM reference sampler): what is left of each task after its full
batches (fewer than a batch; a task smaller than the batch entirely) is pooled across tasks
into mixed batches, and the last, incomplete mixed batch is trained too. Every example is used
exactly once per epoch; the only exception is an item whose text clashes with every batch
(counted in ``dropped``, in practice never). The plan's counts (``mixed``, ``dropped``, ...) go
to the stage's log and manifest.

Under several processes every rank builds the same global batches (same seed and epoch) and
yields its own contiguous slice, so the all-gathered batch is exactly one global batch. A batch
that is not a multiple of the number of processes (the last one) is split as evenly as
possible; the loss gathers uneven slices.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_trainer.data.schema import TrainingExample

__all__ = ["BatchPlan", "SemiHomogeneousBatchSampler", "batch_text_keys", "plan_global_batches", "rank_slice"]

logger = logging.getLogger("kalm_trainer")

_REPAIR_TRIES = 64


def batch_text_keys(example: TrainingExample) -> tuple[str, ...]:
    """The texts that must be unique within a batch: the query and its positives."""
    return (example.query, *example.positives)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    batches: list[list[int]]
    #: items left out this epoch: only items whose texts clash with every batch (text duplicates)
    dropped: int
    duplicate_conflicts: int  # duplicates the cross-batch shuffle could not swap away (rare)
    #: items in mixed batches (tasks' leftovers: fewer than a batch, or a task smaller than one)
    mixed: int = 0
    #: how many batches are mixed (the rest hold one task each, before the ratio's tail shuffle)
    mixed_batches: int = 0
    #: items added to a batch beyond ``batch_size`` (a text clash kept them out of the last one)
    extra: int = 0

    def stats(self) -> dict[str, int]:
        """Counts for logs and manifests."""
        return {
            "batches": len(self.batches),
            "items": sum(len(b) for b in self.batches),
            "mixed_batches": self.mixed_batches,
            "mixed_items": self.mixed,
            "extra_items": self.extra,
            "dropped": self.dropped,
            "duplicate_conflicts": self.duplicate_conflicts,
        }


def _task_batches(
    order: Sequence[int], keys: Sequence[tuple[str, ...]], batch_size: int
) -> tuple[list[list[int]], list[int]]:
    """Fill batches in ``order``; an item whose texts clash with the current batch waits for the
    next one. Returns full batches and the items left over (fewer than a batch, or clashing)."""
    stream = iter(order)
    pending: list[int] = []
    batches: list[list[int]] = []
    while True:
        batch: list[int] = []
        seen: set[str] = set()
        waiting: list[int] = []
        for item in pending:
            if len(batch) < batch_size and seen.isdisjoint(keys[item]):
                batch.append(item)
                seen.update(keys[item])
            else:
                waiting.append(item)
        pending = waiting
        for item in stream if len(batch) < batch_size else ():
            if not seen.isdisjoint(keys[item]):
                pending.append(item)
                continue
            batch.append(item)
            seen.update(keys[item])
            if len(batch) == batch_size:
                break
        if len(batch) < batch_size:
            return batches, batch + pending
        batches.append(batch)


def _place_rest(
    rest: Sequence[int],
    batches: list[list[int]],
    keys: Sequence[tuple[str, ...]],
    min_size: int,
    rng: np.random.Generator,
) -> tuple[list[int], int, int]:
    """The last, incomplete batch from ``rest``. Items clashing with it, and all of it when it
    is smaller than ``min_size`` (one item per process), join an existing batch where their
    texts are new. Returns (last batch or [], items added to other batches, items dropped)."""
    last: list[int] = []
    seen: set[str] = set()
    homeless: list[int] = []
    for item in rest:
        if seen.isdisjoint(keys[item]):
            last.append(item)
            seen.update(keys[item])
        else:
            homeless.append(item)
    if len(last) < min_size:
        homeless, last = last + homeless, []
    if not homeless:
        return last, 0, 0
    targets = [*batches, last] if last else list(batches)
    texts = [set(k for i in b for k in keys[i]) for b in targets]
    added = dropped = 0
    for item in homeless:
        for t in rng.permutation(len(targets)).tolist():
            if texts[t].isdisjoint(keys[item]):
                targets[t].append(item)
                texts[t].update(keys[item])
                added += targets[t] is not last
                break
        else:
            dropped += 1
    return last, added, dropped


def _mix_tails(
    batches: list[list[int]], keys: Sequence[tuple[str, ...]], mixed: int, rng: np.random.Generator
) -> int:
    """Shuffle the last ``mixed`` items of every batch across batches (in place), then swap away
    any text duplicate the shuffle created. Returns the number of duplicates left."""
    if mixed == 0 or len(batches) < 2:
        return 0
    size = len(batches[0])
    flat = np.array([batch[size - mixed :] for batch in batches]).reshape(-1)
    tails = flat[rng.permutation(flat.shape[0])].reshape(len(batches), mixed)
    for batch, tail in zip(batches, tails, strict=True):
        batch[size - mixed :] = tail.tolist()
    counters = [Counter(k for item in b for k in keys[item]) for b in batches]

    def clashes(b: int, item: int) -> bool:
        return any(counters[b][k] > 1 for k in keys[item])

    def fits(b: int, item: int, leaving: int) -> bool:
        return all(counters[b][k] - (k in keys[leaving]) == 0 for k in keys[item])

    left = 0
    for b in range(len(batches)):
        for slot in range(size - mixed, size):
            item = batches[b][slot]
            if not clashes(b, item):
                continue
            for _ in range(_REPAIR_TRIES):
                ob, oslot = int(rng.integers(len(batches))), int(rng.integers(size - mixed, size))
                other = batches[ob][oslot]
                if ob == b or not fits(b, other, item) or not fits(ob, item, other):
                    continue
                batches[b][slot], batches[ob][oslot] = other, item
                counters[b].subtract(keys[item])
                counters[b].update(keys[other])
                counters[ob].subtract(keys[other])
                counters[ob].update(keys[item])
                break
            else:
                left += 1
    return left


def plan_global_batches(
    tasks: Sequence[str],
    *,
    batch_size: int,
    ratio: float = 1.0,
    seed: int = 0,
    epoch: int = 0,
    text_keys: Sequence[Sequence[str]] | None = None,
    min_batch: int = 1,
) -> BatchPlan:
    """All global batches of one epoch (lists of dataset indices); deterministic per (seed, epoch).

    Every item is in exactly one batch (see the module doc for the one exception). Full
    batches hold ``batch_size`` items; the last mixed batch may hold fewer (never fewer than
    ``min_batch``, the number of processes), and a text clash can add an item to a batch.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"ratio must be within [0, 1], got {ratio}")
    if text_keys is not None and len(text_keys) != len(tasks):
        raise InvalidInputError(f"{len(text_keys)} text key lists for {len(tasks)} items")
    # tuples of the caller's own string objects: no text is copied, and a tuple is the smallest
    # container (this list has one entry per training example)
    keys = [tuple(dict.fromkeys(k)) for k in text_keys] if text_keys is not None else [()] * len(tasks)
    rng = np.random.default_rng([seed, epoch])
    by_task: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        by_task.setdefault(task, []).append(index)
    batches: list[list[int]] = []
    leftovers: list[int] = []
    for task in sorted(by_task):  # sorted: the plan must not depend on dataset order of tasks
        members = by_task[task]
        order = [members[i] for i in rng.permutation(len(members))]
        task_batches, left = _task_batches(order, keys, batch_size)
        batches += task_batches
        leftovers += left
    # the KaLM reference sampler: tasks' leftovers are pooled into mixed batches
    pooled = [leftovers[i] for i in rng.permutation(len(leftovers))]
    mixed_batches, rest = _task_batches(pooled, keys, batch_size)
    last, extra, dropped = _place_rest(rest, batches + mixed_batches, keys, max(1, min_batch), rng)
    mixed_batches += [last] if last else []
    batches += mixed_batches
    batches = [batches[i] for i in rng.permutation(len(batches))]
    # round: 10 * (1 - 0.7) is 2.9999999999999996 in floats, and the paper's rule means 3
    tail = int(round(batch_size * (1.0 - ratio), 9))
    full = [b for b in batches if len(b) == batch_size]  # the tail shuffle needs equal sizes
    conflicts = _mix_tails(full, keys, tail, rng)
    mixed_items = sum(len(b) for b in mixed_batches)
    return BatchPlan(batches, dropped, conflicts, mixed_items, len(mixed_batches), extra)


def rank_slice(batch: Sequence[int], rank: int, num_replicas: int) -> list[int]:
    """Rank ``rank``'s contiguous part of a global batch; sizes differ by at most one (the
    first ``len % num_replicas`` ranks get one more), so uneven batches are split evenly."""
    size, extra = divmod(len(batch), num_replicas)
    start = rank * size + min(rank, extra)
    return list(batch[start : start + size + (rank < extra)])


class SemiHomogeneousBatchSampler(Sampler[list[int]]):
    """A ``batch_sampler`` for ``torch.utils.data.DataLoader``: yields this rank's slice of each
    global batch. Call :meth:`set_epoch` at the start of every epoch (HF Trainer does for
    samplers that have it) to reshuffle.

    ``batch_size`` is the GLOBAL batch (per-device batch x number of processes).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        batch_size: int,
        ratio: float = 1.0,
        seed: int = 0,
        text_keys: Sequence[Sequence[str]] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas or (torch.distributed.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ConfigError(f"rank {self.rank} is outside [0, {self.num_replicas})")
        if batch_size % self.num_replicas:
            raise ConfigError(
                f"global batch_size {batch_size} is not divisible by {self.num_replicas} processes"
            )
        self.tasks = list(tasks)
        self.text_keys = text_keys
        self.batch_size = batch_size
        self.per_rank = batch_size // self.num_replicas
        self.ratio = ratio
        self.seed = seed
        self.epoch = 0
        self._plan: tuple[int, BatchPlan] | None = None
        plan_global_batches(self.tasks[:0], batch_size=batch_size, ratio=ratio)  # validate early

    @classmethod
    def from_examples(
        cls,
        examples: Sequence[TrainingExample],
        *,
        batch_size: int,
        ratio: float = 1.0,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> SemiHomogeneousBatchSampler:
        """Tasks and duplicate keys (query + positives) taken from the examples."""
        return cls(
            [ex.task for ex in examples],
            text_keys=[batch_text_keys(ex) for ex in examples],
            batch_size=batch_size,
            ratio=ratio,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self) -> BatchPlan:
        """This epoch's global batches (computed once per epoch)."""
        if self._plan is None or self._plan[0] != self.epoch:
            plan = plan_global_batches(
                self.tasks,
                batch_size=self.batch_size,
                ratio=self.ratio,
                seed=self.seed,
                epoch=self.epoch,
                text_keys=self.text_keys,
                min_batch=self.num_replicas,
            )
            self._plan = (self.epoch, plan)
            logger.info("epoch %d batch plan: %s", self.epoch, plan.stats())
            if plan.dropped:
                logger.warning(
                    "epoch %d: %d example(s) clash (same query or positive text) with every batch "
                    "and are left out",
                    self.epoch,
                    plan.dropped,
                )
        return self._plan[1]

    def plan_stats(self) -> dict[str, int]:
        """This epoch's plan counts (batches, mixed / extra / dropped items) for the manifest."""
        return self.plan().stats()

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.plan().batches:
            yield rank_slice(batch, self.rank, self.num_replicas)

    def __len__(self) -> int:
        return len(self.plan().batches)
