"""Data-step work shared by processes: sharded encoding (two real gloo processes) and teacher
scores computed once and cached with a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from kalm_trainer.data.embedding import load_encoder
from kalm_trainer.data.sharded import sharded_encoding, sharding_active
from kalm_trainer.pipeline import run_recipe
from kalm_trainer.recipe import load_recipe

from tests.trainer.test_trainer_support import one_thread, write_word_pairs  # noqa: F401

TEXTS = [f"text number {i} about {w}" for i, w in enumerate("abcdefg")]  # 7: uneven slices


def _worker(rank: int, world: int, store: str, model: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        encoder = load_encoder(model)
        calls: list[int] = []
        inner = encoder.inner  # type: ignore[attr-defined]
        original = inner.encode_document

        def counting(texts: list[str], **kwargs: object) -> object:
            calls.append(len(texts))
            return original(texts, **kwargs)

        inner.encode_document = counting
        with sharded_encoding():
            assert sharding_active()
            vectors = np.asarray(encoder.encode_document(TEXTS))
        np.save(Path(out) / f"rank{rank}.npy", vectors)
        (Path(out) / f"calls{rank}.json").write_text(json.dumps(calls))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes load a model
def test_encoding_is_split_across_processes(tmp_path: Path) -> None:
    model = "all-MiniLM-L6-v2"  # the packaged real model
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), model, str(tmp_path)), nprocs=2, join=True)
    whole = np.asarray(load_encoder(model).encode_document(TEXTS))
    assert not sharding_active()  # outside the context (and in one process) nothing changes
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), whole, atol=1e-5)
    # each process embedded only its own slice: 3 + 4 of the 7 texts
    assert [json.loads((tmp_path / f"calls{r}.json").read_text()) for r in (0, 1)] == [[3], [4]]


RECIPE = """
[run]
name = "distill"
seed = 0

[model]
base = "{model}"
is_causal = false
max_length = 32

[data.pairs]
step = "convert_pairs"
inputs = ["{pairs}"]

[stage.distill]
data = ["@pairs"]
teacher = "all-MiniLM-L6-v2"
negatives = 1
batch_size = 8
max_steps = 1
learning_rate = 1e-3
save_steps = 0
save_total_limit = 1
loss = {{ temperature = 0.05, matryoshka_dims = [], matryoshka_weights = [] }}
"""


@pytest.mark.usefixtures("one_thread")
def test_teacher_scores_are_computed_once_and_cached(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    pairs = write_word_pairs(tmp_path / "pairs.jsonl", per_task=8, negatives=1)
    recipe_file = tmp_path / "distill.toml"
    recipe_file.write_text(RECIPE.format(model=tiny_qwen2_dir, pairs=pairs), encoding="utf-8")
    out = tmp_path / "run"
    run_recipe(load_recipe(recipe_file, [f"run.output_dir={out}"]))
    cache = out / "teacher" / "distill"
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["step"] == "teacher_scores" and manifest["stats"]["examples"] == 16
    rows = [json.loads(line) for line in (cache / "examples.jsonl").open()]
    assert all(len(r["teacher_scores"]) == 2 for r in rows)  # positive + 1 negative
    stamp = (cache / "manifest.json").stat().st_mtime_ns
    # another training setting re-runs the stage, not the teacher
    result = run_recipe(
        load_recipe(recipe_file, [f"run.output_dir={out}", "stage.distill.learning_rate=5e-4"])
    )
    assert [s.status for s in result.steps] == ["skipped (done)", "ran"]
    assert (cache / "manifest.json").stat().st_mtime_ns == stamp
