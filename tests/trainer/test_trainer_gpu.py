"""The GPU path: bf16 autocast on CUDA, the model on the GPU, a loadable result. Needs a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kalm_trainer.pipeline import run_recipe
from kalm_trainer.recipe import load_recipe

from kalm_rag import Encoder
from tests.trainer.test_trainer_support import write_word_pairs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_tiny_recipe_trains_in_bf16_on_cuda(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    pairs = write_word_pairs(tmp_path / "pairs.jsonl", per_task=24, negatives=3)
    out = tmp_path / "run"
    recipe = load_recipe(
        "tiny",
        [
            f"model.base={tiny_qwen2_dir}",
            "model.is_causal=false",
            f'data.pairs.inputs=["{pairs}"]',
            f"data.filtered.config.model={tiny_qwen2_dir}",
            f"data.mined.config.model={tiny_qwen2_dir}",
            f"run.output_dir={out}",
            "stage.finetune.gradient_checkpointing=true",
            "stage.finetune.gradcache_chunk=8",
        ],
    )
    result = run_recipe(recipe)
    stats = json.loads((out / "stages" / "finetune" / "manifest.json").read_text())["stats"]
    assert stats["bf16"] is True and stats["device"].startswith("cuda")
    assert all(np.isfinite(stats["losses"]))
    assert result.final_model is not None
    encoder = Encoder.from_pretrained(result.final_model, device="cuda")
    vectors = encoder.encode_query(["search index"])
    assert vectors.shape == (1, 32) and np.isfinite(vectors).all()
