"""Scoring for evaluation (prompt policy, BM25, TF-IDF) and the Encoder's token-budget batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kalm_rag import Encoder, ModelConfig
from kalm_rag.batching import CPU_TOKEN_BUDGET, length_sorted_batches
from kalm_rag.errors import InvalidInputError
from kalm_rag.eval.scoring import bm25_run, dense_pair_scores, dense_scores, encode_side, tfidf_pair_scores
from kalm_rag.instructions import KALM_TEMPLATE

TEXTS = ["a small python library for search", "the kernel driver", "install the debian package"]


@pytest.fixture(scope="module")
def e5_like(tiny_bert_dir: Path) -> Encoder:
    config = ModelConfig(pooling="mean", query_prompt="query: ", document_prompt="passage: ")
    return Encoder.from_pretrained(tiny_bert_dir, config=config, dtype="float32")


def test_asymmetric_tasks_prompt_queries_and_documents_differently(e5_like: Encoder) -> None:
    query = encode_side(e5_like, TEXTS, side="query", task="retrieval")
    document = encode_side(e5_like, TEXTS, side="document", task="retrieval")
    np.testing.assert_allclose(query, e5_like.encode(TEXTS, prompt="query: "), atol=1e-6)
    np.testing.assert_allclose(document, e5_like.encode(TEXTS, prompt="passage: "), atol=1e-6)
    matrix = dense_scores(e5_like, TEXTS[:2], TEXTS)
    np.testing.assert_allclose(matrix, query[:2] @ document.T, atol=1e-5)


def test_symmetric_tasks_encode_both_sides_as_queries(e5_like: Encoder) -> None:
    both = dense_pair_scores(e5_like, TEXTS, TEXTS, task="sts")
    np.testing.assert_allclose(both, np.ones(3), atol=1e-5)  # identical prompts on both sides
    with pytest.raises(InvalidInputError, match="first texts"):
        dense_pair_scores(e5_like, TEXTS, TEXTS[:2])


def test_instructions_reach_only_instruction_aware_models(tiny_qwen2_dir: Path, e5_like: Encoder) -> None:
    kalm = Encoder.from_pretrained(
        tiny_qwen2_dir,
        config=ModelConfig(is_causal=False, instruction_template=KALM_TEMPLATE),
        dtype="float32",
    )
    out = encode_side(kalm, TEXTS, side="query", task="retrieval", instruction="Find code")
    np.testing.assert_allclose(
        out, kalm.encode(TEXTS, prompt=KALM_TEMPLATE.format(instruction="Find code")), atol=1e-6
    )
    # e5 has no template: the instruction is dropped, its fixed prompt stays
    out = encode_side(e5_like, TEXTS, side="query", task="retrieval", instruction="Find code")
    np.testing.assert_allclose(out, e5_like.encode(TEXTS, prompt="query: "), atol=1e-6)


def test_bm25_run_ranks_the_matching_document_first() -> None:
    doc_ids = ["py", "kern", "deb"]
    run = bm25_run(["q1", "q2"], ["python search library", "kernel"], doc_ids, TEXTS, k=2)
    assert max(run["q1"], key=run["q1"].__getitem__) == "py"
    assert list(run["q2"]) == ["kern"]  # documents sharing no term are left out


def test_tfidf_pair_scores_are_cosines() -> None:
    scores = tfidf_pair_scores(["kernel driver", "python library"], ["kernel driver", "debian package"])
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert scores[1] == pytest.approx(0.0, abs=1e-6)


def test_token_budget_caps_padded_tokens_per_batch() -> None:
    lengths = [300, 10, 250, 12, 11, 40, 600, 9]
    batches = length_sorted_batches(lengths, 4, max_tokens=512)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        widths = [lengths[i] for i in batch]
        assert widths == sorted(widths, reverse=True)  # longest first within and across batches
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * max(widths) <= 512
    assert batches[0] == [6]  # longer than the budget: a batch of its own
    assert length_sorted_batches(lengths, 4) == length_sorted_batches(lengths, 4, max_tokens=None)
    assert [len(b) for b in length_sorted_batches(lengths, 4)] == [4, 4]
    with pytest.raises(ValueError, match="max_tokens"):
        length_sorted_batches(lengths, 4, max_tokens=0)
    assert CPU_TOKEN_BUDGET >= 512


def test_budgeted_batches_give_the_same_vectors(e5_like: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [" ".join(["python library search"] * n) for n in (1, 12, 3, 18, 2, 8)]
    one_by_one = np.stack([e5_like.encode([t])[0] for t in texts])
    monkeypatch.setattr("kalm_rag.batching.CPU_TOKEN_BUDGET", 64)  # small enough to split this batch
    np.testing.assert_allclose(e5_like.encode(texts, batch_size=6), one_by_one, atol=1e-5)
