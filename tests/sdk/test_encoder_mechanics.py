"""Encoder mechanics on tiny random models of real architectures (Qwen2 decoder, BERT)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kalm_rag import Encoder, ModelConfig
from kalm_rag.loading import load_backbone
from kalm_rag.pooling import pool

TEXTS = [
    "the query is fast",
    "a small python library for search",
    "install the debian package with the command line tool and run the server",
    "kernel driver",
]


def _hidden(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    return out


@pytest.mark.parametrize("is_causal", [False, True])
def test_bidirectional_qwen2_sees_later_tokens(tiny_qwen2_dir: Path, is_causal: bool) -> None:
    config = ModelConfig(is_causal=is_causal)
    model = load_backbone(tiny_qwen2_dir, config, device=torch.device("cpu"), dtype=torch.float32)
    first = _hidden(model, [10, 11, 12, 13])
    changed_last = _hidden(model, [10, 11, 12, 99])
    earlier_changed = not torch.allclose(first[0], changed_last[0], atol=1e-6)
    assert earlier_changed is (not is_causal)


@pytest.mark.parametrize("is_causal", [False, True])
def test_left_and_right_padding_match_unpadded(tiny_qwen2_dir: Path, is_causal: bool) -> None:
    model = load_backbone(tiny_qwen2_dir, ModelConfig(is_causal=is_causal), device=torch.device("cpu"),
                          dtype=torch.float32)  # fmt: skip
    short, long = [10, 11, 12], [20, 21, 22, 23, 24, 25]
    alone = pool(_hidden(model, short)[None], torch.ones(1, 3), "mean")[0]
    for side in ("right", "left"):
        pad = [0, 0, 0]
        ids = [short + pad, long] if side == "right" else [pad + short, long]
        mask = [[1, 1, 1, 0, 0, 0], [1] * 6] if side == "right" else [[0, 0, 0, 1, 1, 1], [1] * 6]
        with torch.inference_mode():
            hidden = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
        pooled = pool(hidden, torch.tensor(mask), "mean")[0]
        torch.testing.assert_close(
            pooled, alone, atol=1e-5, rtol=1e-5, msg=f"{side} padding changed the embedding"
        )


def test_pool_modes_pick_the_right_tokens() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    left_padded = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, left_padded, "cls")[:, 0].tolist() == [1.0, 4.0]
    assert pool(hidden, left_padded, "last")[:, 0].tolist() == [3.0, 7.0]
    assert pool(hidden, left_padded, "mean")[:, 0].tolist() == [2.0, 5.5]


def test_batched_encoding_keeps_input_order(tiny_bert_dir: Path) -> None:
    encoder = Encoder.from_pretrained(tiny_bert_dir, dtype="float32")
    batched = encoder.encode(TEXTS, batch_size=2)
    one_by_one = np.vstack([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.dtype == np.float32 and batched.shape == (4, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_kalm_instruction_reaches_queries_not_documents(tiny_qwen2_dir: Path) -> None:
    encoder = Encoder.from_pretrained(tiny_qwen2_dir, dtype="float32", config=Encoder_kalm_config())
    q = encoder.encode_query(["the query is fast"])
    manual = encoder.encode(
        ["Instruct: Given a query, retrieve documents that answer the query \n Query: the query is fast"]
    )
    np.testing.assert_allclose(q, manual, atol=1e-6)
    d = encoder.encode_document(["the query is fast"])
    np.testing.assert_allclose(d, encoder.encode(["the query is fast"]), atol=1e-6)
    custom = encoder.encode_query(["the query is fast"], instruction="Find the package")
    assert not np.allclose(custom, q)
    sts_doc = encoder.encode_document(["the query is fast"], task="sts")
    np.testing.assert_allclose(sts_doc, encoder.encode_query(["the query is fast"], task="sts"), atol=1e-6)


def Encoder_kalm_config() -> ModelConfig:
    from kalm_rag.registry import REGISTRY

    return REGISTRY["kalm-v2"].config


def test_matryoshka_truncation_renormalises(tiny_qwen2_dir: Path) -> None:
    encoder = Encoder.from_pretrained(tiny_qwen2_dir, dtype="float32", is_causal=False)
    full = encoder.encode(TEXTS, normalize=False)
    cut = encoder.encode(TEXTS, truncate_dim=8)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)


def test_import_is_light() -> None:
    heavy = "('torch', 'transformers', 'hnswlib', 'qdrant_client', 'qdrant_edge', 'numpy')"
    code = f"import sys, kalm_rag; kalm_rag.ModelConfig; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import kalm_rag pulled in heavy modules: {out}"
