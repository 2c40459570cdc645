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


def test_ratio_one_gives_single_task_batches_covering_each_item_once() -> None:
    plan = plan_global_batches(TASKS, batch_size=4, ratio=1.0, seed=3)
    assert len(plan.batches) == 10 + 6 + 4 and plan.dropped == 1
    assert all(len({TASKS[i] for i in batch}) == 1 for batch in plan.batches)
    used = [i for batch in plan.batches for i in batch]
    assert len(used) == len(set(used)) == 80
    assert Counter(TASKS[b[0]] for b in plan.batches) == {"a": 10, "b": 6, "c": 4}


def test_ratio_mixes_exactly_the_batch_tails() -> None:
    plan = plan_global_batches(TASKS, batch_size=8, ratio=0.75, seed=0)
    heads = [b[:6] for b in plan.batches]
    assert all(len({TASKS[i] for i in head}) == 1 for head in heads)  # first 6 stay homogeneous
    tails = [TASKS[i] for b in plan.batches for i in b[6:]]
    mixed = sum(TASKS[b[6]] != TASKS[b[0]] or TASKS[b[7]] != TASKS[b[0]] for b in plan.batches)
    assert mixed > 0 and len(tails) == 2 * len(plan.batches)
    used = [i for b in plan.batches for i in b]
    assert len(used) == len(set(used))  # still every item at most once


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
            assert all(len(s) == 2 for s in slices)
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
    assert placed + sampler.plan().dropped == len(examples)


def test_works_as_a_dataloader_batch_sampler() -> None:
    data = torch.arange(len(TASKS))
    sampler = SemiHomogeneousBatchSampler(TASKS, batch_size=4, ratio=1.0, seed=0)
    assert isinstance(sampler, Sampler)
    loader: DataLoader[torch.Tensor] = DataLoader(data, batch_sampler=sampler)  # type: ignore[arg-type]
    batches = list(loader)
    assert len(batches) == len(loader) == 20
    assert all(len({TASKS[int(i)] for i in b}) == 1 for b in batches)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not divisible by 3"):
        SemiHomogeneousBatchSampler(TASKS, batch_size=8, num_replicas=3, rank=0)
    with pytest.raises(ConfigError, match="ratio"):
        SemiHomogeneousBatchSampler(TASKS, batch_size=8, ratio=1.5)
    with pytest.raises(ConfigError, match="rank 2 is outside"):
        SemiHomogeneousBatchSampler(TASKS, batch_size=8, num_replicas=2, rank=2)
