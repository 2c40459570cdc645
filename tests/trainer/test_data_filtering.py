"""Ranking-consistency filtering: the pure core on score matrices, the chunked search, and the
real thing with the packaged MiniLM on the shared Debian training pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kalm_trainer.data.convert import load_pairs
from kalm_trainer.data.embedding import build_pool
from kalm_trainer.data.filtering import (
    best_positive_ranks,
    best_positive_ranks_from_embeddings,
    filter_ranking_consistency,
)
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.data.search import top_k_search

from kalm_rag import Encoder


def test_positive_ranked_third_is_dropped_at_top_k_two() -> None:
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.1],  # positive = item 2, ranked 3rd -> rank 2
            [0.2, 0.95, 0.3, 0.1],  # positive = item 1, ranked 1st -> rank 0
            [0.5, 0.4, 0.6, 0.55],  # positives 1 and 3: the best one (3) is ranked 2nd
        ]
    )
    ranks = best_positive_ranks(scores, [[2], [1], [1, 3]])
    assert ranks.tolist() == [2, 0, 1]
    keep_at_2 = ranks < 2
    assert keep_at_2.tolist() == [False, True, True]


def test_excluded_items_do_not_count() -> None:
    scores = np.array([[0.99, 0.8, 0.7]])  # item 0 is the query's own text
    assert best_positive_ranks(scores, [[2]]).tolist() == [2]
    assert best_positive_ranks(scores, [[2]], [[0]]).tolist() == [1]


def test_ties_favour_the_positive() -> None:
    assert best_positive_ranks(np.array([[0.5, 0.5, 0.5]]), [[1]]).tolist() == [0]


def test_chunked_ranks_match_dense_reference() -> None:
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((37, 16)).astype(np.float32)
    pool = rng.standard_normal((203, 16)).astype(np.float32)
    positives = [rng.choice(203, size=int(rng.integers(1, 4)), replace=False).tolist() for _ in range(37)]
    exclude = [[int(rng.integers(203))] for _ in range(37)]
    dense = best_positive_ranks(queries @ pool.T, positives, exclude)
    chunked = best_positive_ranks_from_embeddings(
        queries, pool, positives, exclude, device="cpu", query_block=5, doc_chunk=17
    )
    assert chunked.tolist() == dense.tolist()
    assert dense.min() >= 0 and dense.max() > 20  # random data: a real spread of ranks


def test_top_k_search_matches_full_sort() -> None:
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((23, 8)).astype(np.float32)
    docs = rng.standard_normal((150, 8)).astype(np.float32)
    scores, ids = top_k_search(queries, docs, 40, query_block=7, doc_chunk=13, device="cpu")
    expected = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :40]
    assert ids.tolist() == expected.tolist()
    assert np.allclose(scores, np.take_along_axis(queries @ docs.T, expected, 1), atol=1e-5)
    assert top_k_search(queries, docs, 500)[1].shape == (23, 150)  # k above the pool size


class ScoreEncoder:
    """A TextEncoder over a fixed vocabulary of hand-made vectors (the text says where it points)."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode_query(self, texts: Sequence[str], *, instruction: str | None = None, task: Any = None) -> Any:
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)

    def encode_document(self, texts: Sequence[str], *, task: Any = None) -> Any:
        return self.encode_query(texts)


def test_filter_reports_drops_per_task() -> None:
    vectors = {"q1": [1.0, 0.0], "q2": [0.0, 1.0], "near": [0.9, 0.1], "far": [0.1, 0.9], "mid": [0.7, 0.7]}
    examples = [
        TrainingExample("q1", ("near",), ("far",), task="a"),  # positive first: kept
        TrainingExample(
            "q2", ("near",), ("far", "mid"), task="a"
        ),  # far, mid beat the positive: dropped at k=2
        TrainingExample("q1", ("far",), ("mid",), task="b"),  # pool {far, mid}: far is 2nd: kept at k=2
    ]
    result = filter_ranking_consistency(examples, ScoreEncoder(vectors), top_k=2, device="cpu")
    assert result.ranks == [0, 2, 1]
    assert result.kept == [examples[0], examples[2]]
    assert dict(result.dropped_per_task) == {"a": 1, "b": 0}
    assert dict(result.kept_per_task) == {"a": 1, "b": 1}


@pytest.fixture(scope="module")
def debian_examples(train_data: Path) -> list[TrainingExample]:
    return load_pairs(train_data / "debian_pairs.jsonl").examples[:300]


@pytest.mark.slow
def test_real_filtering_with_minilm(default_encoder: Encoder, debian_examples: list[TrainingExample]) -> None:
    examples = debian_examples
    result = filter_ranking_consistency(examples, default_encoder, top_k=10, device="cpu")
    # reference: dense scores computed here, ranked by the pure core
    pool = build_pool(examples)
    queries = default_encoder.encode_query([ex.query for ex in examples])
    docs = default_encoder.encode_document(list(pool.texts))
    reference = best_positive_ranks(queries @ docs.T, [[pool.ids[ex.positives[0]]] for ex in examples])
    assert np.abs(np.array(result.ranks) - reference).max() <= 1  # bf16/fp32 near-ties at most
    kept = np.array(result.ranks) < 10
    assert len(result.kept) == int(kept.sum()) and result.dropped_per_task["debian-desc"] == int(
        (~kept).sum()
    )
    # MiniLM is an English model: English short descriptions find their long description far
    # more often than translated ones, which is what the filter is for (inconsistent pairs go)
    english = np.array([ex.meta["lang"] == "en" for ex in examples])
    assert kept[english].mean() > 0.9
    assert kept[english].mean() > kept[~english].mean() + 0.1
