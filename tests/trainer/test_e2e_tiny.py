"""The shipped tiny recipe end to end on a tiny bidirectional Qwen2 and real Debian pairs:
filter -> mine -> pre-train -> fine-tune -> soup; the loss goes down, the soup is the average
of the checkpoints, the result loads in kalm_rag and sentence-transformers, re-runs skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kalm_trainer.checkpoints import complete_checkpoints
from kalm_trainer.pipeline import run_recipe
from kalm_trainer.recipe import load_recipe
from safetensors.torch import load_file

from kalm_rag import Encoder
from kalm_rag.instructions import KALM_TEMPLATE
from tests.trainer.test_trainer_support import one_thread, write_debian_pairs  # noqa: F401

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def overrides(model: Path, pairs: Path, out: Path) -> list[str]:
    return [
        f"model.base={model}",
        "model.is_causal=false",
        f'model.instruction_template="{KALM_TEMPLATE.encode("unicode_escape").decode()}"',
        f'data.pairs.inputs=["{pairs}"]',
        f"data.filtered.config.model={model}",
        f"data.mined.config.model={model}",
        f"run.output_dir={out}",
    ]


def test_tiny_recipe_end_to_end(tiny_qwen2_dir: Path, train_data: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    pairs = write_debian_pairs(tmp_path / "pairs.jsonl", train_data / "debian_pairs.jsonl",
                               per_lang=24, langs=("en", "de"))  # fmt: skip
    out = tmp_path / "run"
    recipe = load_recipe("tiny", overrides(tiny_qwen2_dir, pairs, out))
    result = run_recipe(recipe)
    assert [s.status for s in result.steps] == ["ran"] * 6
    assert result.final_model == out / "soup" / "model"

    pretrain = json.loads((out / "stages" / "pretrain" / "manifest.json").read_text())["stats"]
    per_epoch, losses = pretrain["batches_per_epoch"], pretrain["losses"]
    assert len(losses) == 3 * per_epoch
    assert np.mean(losses[-per_epoch:]) < 0.8 * np.mean(losses[:per_epoch])

    mined = [json.loads(line) for line in (out / "data" / "mined" / "examples.jsonl").open()]
    assert all(len(row["negatives"]) == 3 for row in mined)

    checkpoints = complete_checkpoints(out / "checkpoints" / "finetune")
    assert [c.name for c in checkpoints] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    soup = load_file(result.final_model / "model.safetensors")
    key = "layers.0.mlp.up_proj.weight"
    expected = torch.stack([load_file(c / "model.safetensors")[key] for c in checkpoints]).mean(0)
    torch.testing.assert_close(soup[key], expected)

    queries, docs = ["install a python package"], ["A library to parse command line options."]
    encoder = Encoder.from_pretrained(result.final_model, dtype="float32")
    assert encoder.config.is_causal is False and encoder.config.instruction_template == KALM_TEMPLATE
    st = SentenceTransformer(str(result.final_model), device="cpu")
    np.testing.assert_allclose(
        st.encode(queries, prompt_name="retrieval", normalize_embeddings=True),
        encoder.encode_query(queries),
        atol=1e-5,
    )
    np.testing.assert_allclose(st.encode(docs), encoder.encode_document(docs), atol=1e-5)

    again = run_recipe(load_recipe("tiny", overrides(tiny_qwen2_dir, pairs, out)))
    assert [s.status for s in again.steps] == ["skipped (done)"] * 6

    changed = load_recipe("tiny", [*overrides(tiny_qwen2_dir, pairs, out), "stage.finetune.loss.gamma=0.0"])
    partial = run_recipe(changed, from_step="finetune")
    assert [s.status for s in partial.steps] == ["not run (before --from)"] * 4 + ["ran", "ran"]
    new_soup = load_file(out / "soup" / "model" / "model.safetensors")
    assert not torch.equal(new_soup[key], soup[key])
