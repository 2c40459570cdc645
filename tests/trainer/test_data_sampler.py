"""Semi-homogeneous task batch sampler on hand-checkable inputs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from kalm_trainer.data.sampler import SemiHomogeneousBatchSampler, plan_global_batches
from kalm_trainer.data.schema import TrainingExample
from torch.utils.data import DataLoader, Sampler

from kalm_rag.errors import ConfigError

# 3 tasks of 40, 24 and 17 items: 10 + 6 + 4 full batches of 4, one item of "c" left over
TASKS = ["a"] * 40 + ["b"] * 24 + ["c"] * 17


def used_once(batches: list[list[int]], count: int) -> bool:
    used = [i for batch in batches for i in batch]
    return sorted(used) == list(range(count))


def test_ratio_one_gives_single_task_batches_covering_each_item_once() -> None:
    plan = plan_global_batches(TASKS, batch_size=4, ratio=1.0, seed=3)
    # the one left-over item of "c" is trained too, in a last (mixed) batch of 1
    assert len(plan.batches) == 10 + 6 + 4 + 1 and plan.dropped == 0
    assert (plan.mixed, plan.mixed_batches) == (1, 1)
    assert all(len({TASKS[i] for i in batch}) == 1 for batch in plan.batches)
    assert used_once(plan.batches, 81)
    full = [b for b in plan.batches if len(b) == 4]
    assert Counter(TASKS[b[0]] for b in full) == {"a": 10, "b": 6, "c": 4}


def test_leftovers_and_small_tasks_go_into_mixed_batches() -> None:
    # "tiny" (3 items) is smaller than a batch; "a" and "b" leave 2 and 3 items over
    tasks = ["a"] * 18 + ["b"] * 11 + ["tiny"] * 3
    for epoch in range(3):
        plan = plan_global_batches(tasks, batch_size=8, ratio=1.0, seed=0, epoch=epoch)
        assert used_once(plan.batches, len(tasks)) and plan.dropped == 0
        sizes = sorted(len(b) for b in plan.batches)
        assert sizes == [8, 8, 8, 8]  # 2 of "a", 1 of "b", 1 mixed of the 2 + 3 + 3 leftovers
        mixed = [b for b in plan.batches if len({tasks[i] for i in b}) > 1]
        assert len(mixed) == plan.mixed_batches == 1 and plan.mixed == 8
        assert Counter(tasks[i] for i in mixed[0]) == {"a": 2, "b": 3, "tiny": 3}
    assert plan.stats() == {
        "batches": 4,
        "items": 32,
        "mixed_batches": 1,
        "mixed_items": 8,
        "extra_items": 0,
        "dropped": 0,
        "duplicate_conflicts": 0,
    }


def test_every_rank_slice_covers_every_example_once_per_epoch() -> None:
    tasks = ["a"] * 21 + ["b"] * 13 + ["tiny"] * 2  # 36 items, global batch 8 over 4 ranks
    samplers = [
        SemiHomogeneousBatchSampler(tasks, batch_size=8, ratio=0.5, seed=1, num_replicas=4, rank=r)
        for r in range(4)
    ]
    for epoch in (0, 1):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        per_rank = [list(s) for s in samplers]
        assert len({len(batches) for batches in per_rank}) == 1  # same number of steps on every rank
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert sorted(seen) == list(range(36))
        for step, batch in enumerate(samplers[0].plan().batches):
            slices = [per_rank[r][step] for r in range(4)]
            assert [i for s in slices for i in s] == batch
            assert all(len(s) >= 1 for s in slices) and max(map(len, slices)) - min(map(len, slices)) <= 1


def test_a_last_batch_smaller_than_the_process_count_joins_other_batches() -> None:
    tasks = ["a"] * 8 + ["b"] * 1  # one leftover item, 4 processes: no batch of 1 to split
    plan = plan_global_batches(tasks, batch_size=4, ratio=1.0, seed=0, min_batch=4)
    assert used_once(plan.batches, 9) and plan.extra == 1
    assert sorted(len(b) for b in plan.batches) == [4, 5]


def test_ratio_mixes_exactly_the_batch_tails() -> None:
    plan = plan_global_batches(TASKS, batch_size=8, ratio=0.75, seed=0)
    assert plan.mixed_batches == 1  # 40 + 24 + 16 full, one leftover of "c" alone in the last
    full = [b for b in plan.batches if len(b) == 8]
    heads = [b[:6] for b in full]
    assert all(len({TASKS[i] for i in head}) == 1 for head in heads)  # first 6 stay homogeneous
    tails = [TASKS[i] for b in full for i in b[6:]]
    mixed = sum(TASKS[b[6]] != TASKS[b[0]] or TASKS[b[7]] != TASKS[b[0]] for b in full)
    assert mixed > 0 and len(tails) == 2 * len(full)
    assert used_once(plan.batches, 81)  # still every item exactly once


def test_ratio_zero_is_random_batches() -> None:
    plan = plan_global_batches(TASKS, batch_size=8, ratio=0.0, seed=0)
    assert sum(len({TASKS[i] for i in b}) > 1 for b in plan.batches) >= len(plan.batches) // 2


def test_deterministic_per_seed_and_epoch() -> None:
    first = plan_global_batches(TASKS, batch_size=4, ratio=0.5, seed=1, epoch=0).batches
    assert first == plan_global_batches(TASKS, batch_size=4, ratio=0.5, seed=1, epoch=0).batches
    assert first != plan_global_batches(TASKS, batch_size=4, ratio=0.5, seed=1, epoch=1).batches
    assert first != plan_global_batches(TASKS, batch_size=4, ratio=0.5, seed=2, epoch=0).batches


def test_set_epoch_reshuffles_and_rank_slices_partition_each_batch() -> None:
    samplers = [
        SemiHomogeneousBatchSampler(TASKS, batch_size=8, ratio=0.5, seed=7, num_replicas=4, rank=r)
        for r in range(4)
    ]
    for epoch in (0, 1):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        per_rank = [list(s) for s in samplers]
        global_batches = samplers[0].plan().batches
        assert all(
            len(batches) == len(global_batches) == len(s)
            for batches, s in zip(per_rank, samplers, strict=True)
        )
        for step, batch in enumerate(global_batches):
            slices = [per_rank[r][step] for r in range(4)]
            assert all(len(s) == 2 for s in slices) or len(batch) != 8
            assert [i for s in slices for i in s] == batch  # disjoint, in order, complete
    assert list(samplers[0]) != [
        b[:2] for b in plan_global_batches(TASKS, batch_size=8, ratio=0.5, seed=7).batches
    ]


def test_no_duplicate_text_inside_a_batch() -> None:
    # 12 examples share 3 positives: a batch may hold each positive only once
    examples = [TrainingExample(f"q{i}", (f"doc{i % 3}",), task="t") for i in range(12)] + [
        TrainingExample(f"r{i}", (f"other{i}",), task="t") for i in range(12)
    ]
    sampler = SemiHomogeneousBatchSampler.from_examples(examples, batch_size=6, ratio=0.5, seed=0)
    batches = list(sampler)
    assert batches and sampler.plan().duplicate_conflicts == 0
    for batch in batches:
        positives = [examples[i].positives[0] for i in batch]
        assert len(positives) == len(set(positives))
    placed = sum(len(b) for b in batches)
    assert placed == len(examples) and sampler.plan().dropped == 0


def test_works_as_a_dataloader_batch_sampler() -> None:
    data = torch.arange(len(TASKS))
    sampler = SemiHomogeneousBatchSampler(TASKS, batch_size=4, ratio=1.0, seed=0)
    assert isinstance(sampler, Sampler)
    loader: DataLoader[torch.Tensor] = DataLoader(data, batch_sampler=sampler)  # type: ignore[arg-type]
    batches = list(loader)
    assert len(batches) == len(loader) == 21
    assert all(len({TASKS[int(i)] for i in b}) == 1 for b in batches)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not divisible by 3"):
        SemiHomogeneousBatchSampler(TASKS, batch_size=8, num_replicas=3, rank=0)
    with pytest.raises(ConfigError, match="ratio"):
        SemiHomogeneousBatchSampler(TASKS, batch_size=8, ratio=1.5)
    with pytest.raises(ConfigError, match="rank 2 is outside"):
        SemiHomogeneousBatchSampler(TASKS, batch_size=8, num_replicas=2, rank=2)


def test_a_leftover_clashing_with_the_last_batch_joins_another_batch() -> None:
    examples = [TrainingExample(f"q{i}", (f"d{i}",), task="a") for i in range(8)] + [
        TrainingExample("same question", (f"answer {i}",), task="b") for i in range(2)
    ]
    sampler = SemiHomogeneousBatchSampler.from_examples(examples, batch_size=4, ratio=1.0, seed=0)
    plan = sampler.plan()
    assert used_once(plan.batches, 10) and plan.extra == 1 and plan.dropped == 0
    for batch in plan.batches:
        queries = [examples[i].query for i in batch]
        assert len(queries) == len(set(queries))
