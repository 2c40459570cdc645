"""Streaming data: the on-disk example index, lazy reads, and batches planned from the index."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from kalm_trainer.data.jsonl import read_examples, write_examples
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.data.store import ExampleIndex, IndexedExamples, open_index
from kalm_trainer.data.store_sampler import IndexedBatchSampler, plan_indexed_batches

from kalm_rag.errors import InvalidInputError


def write_files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    first = [
        TrainingExample(f"q{i} {task}", (f"p{i} {task}",), task=task)
        for i in range(42)  # 2 of each task are left over: mixed batches
        for task in ("zeta", "alpha")
    ]
    # duplicates on purpose: the same query in two examples must never share a batch
    second = [TrainingExample(f"q{i % 20} beta", (f"d{i}",), task="beta") for i in range(45)]
    rng.shuffle(first)  # type: ignore[arg-type]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_examples(a, first)
    write_examples(b, second)
    with b.open("a", encoding="utf-8") as handle:
        handle.write("\n   \n")  # blank lines are skipped and counted
    return [a, b]


def test_index_reads_every_example_lazily(tmp_path: Path) -> None:
    files = write_files(tmp_path)
    index = open_index(files, tmp_path / "index")
    expected = read_examples(files).examples
    assert index.count == len(expected) == 129 and index.meta["blank_lines"] == 2
    assert index.task_names == ["alpha", "beta", "zeta"]
    dataset = IndexedExamples(index)
    assert [dataset[i] for i in range(len(dataset))] == expected
    for task, name in enumerate(index.task_names):
        assert {expected[i].task for i in np.asarray(index.members(task))} == {name}
    # a DataLoader worker gets a pickled copy that reopens the files itself
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone[77] == expected[77]
    with pytest.raises(IndexError):
        dataset[129]


def test_index_is_reused_and_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    files = write_files(tmp_path)
    first = open_index(files, tmp_path / "index")
    again = open_index(files, tmp_path / "index", build=False, wait_s=1)  # current: no waiting
    assert again.meta["seconds"] == first.meta["seconds"]
    with files[0].open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"query": "new", "positives": ["one"], "task": "alpha"}) + "\n")
    assert open_index(files, tmp_path / "index").count == 130


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a", "positives": ["b"]}\n{"query": oops}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:2"):
        open_index([path], tmp_path / "index")
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_plan_keeps_the_task_batching_rules(tmp_path: Path, ratio: float) -> None:
    index = open_index(write_files(tmp_path), tmp_path / "index")
    batches, stats = plan_indexed_batches(index, batch_size=8, ratio=ratio, seed=3, epoch=0)
    assert batches.shape[1] == 8
    flat = batches.reshape(-1)
    assert len(set(flat.tolist())) == flat.shape[0]  # no example twice in an epoch
    assert flat.shape[0] + stats["dropped"] == index.count
    dataset = IndexedExamples(index)
    mixed = 0
    for row in batches:
        examples = [dataset[int(i)] for i in row]
        texts = [ex.query for ex in examples] + [ex.positives[0] for ex in examples]
        assert len(set(texts)) == len(texts) or stats["duplicate_conflicts"]
        tasks = [ex.task for ex in examples]
        # ratio 1: one task per batch; 0.5: the first half of every batch from one task
        mixed += len(set(tasks if ratio == 1.0 else tasks[:4])) > 1
    # only the batches pooled from the tasks' leftovers mix tasks from the start
    assert stats["mixed_batches"] >= 1 and mixed <= stats["mixed_batches"]
    again, _ = plan_indexed_batches(index, batch_size=8, ratio=ratio, seed=3, epoch=0)
    other, _ = plan_indexed_batches(index, batch_size=8, ratio=ratio, seed=3, epoch=1)
    assert np.array_equal(batches, again) and not np.array_equal(batches, other)


def test_ranks_slice_the_same_global_batches(tmp_path: Path) -> None:
    index = open_index(write_files(tmp_path), tmp_path / "index")
    whole = list(IndexedBatchSampler(index, batch_size=8, ratio=0.75, seed=1))
    ranks = [
        list(IndexedBatchSampler(index, batch_size=8, ratio=0.75, seed=1, num_replicas=2, rank=r))
        for r in (0, 1)
    ]
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole
    sampler = IndexedBatchSampler(index, batch_size=8, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and len(sampler) == len(first)
    assert not [p for p in os.listdir(index.folder) if p.startswith("plan-")]  # no plan files left


def test_index_arrays_are_memory_mapped(tmp_path: Path) -> None:
    index = ExampleIndex(open_index(write_files(tmp_path), tmp_path / "index").folder)
    for array in (index.offsets, index.tasks, index.keys, index.by_task):
        assert isinstance(array, np.memmap)
