"""The packaged real models: semantics and retrieval quality on real dev data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kalm_rag import Encoder
from kalm_rag.beir import load_retrieval_task


def test_paraphrase_beats_unrelated_pair(default_encoder: Encoder) -> None:
    a, b, c = default_encoder.encode(
        [
            "A man is playing a guitar.",
            "Someone plays an acoustic guitar.",
            "The central bank raised interest rates.",
        ]
    )
    assert a @ b > a @ c + 0.3


def test_matches_sentence_transformers_on_real_weights(default_encoder: Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    assert default_encoder.source_folder is not None
    st = SentenceTransformer(str(default_encoder.source_folder), device="cpu")
    texts = ["Delayed job execution and batch processing", "YM2608 music tracker", "Linux kernel headers"]
    cos = (st.encode(texts) * default_encoder.encode(texts)).sum(axis=1)
    assert cos.min() >= 0.99999


def ndcg_at_10(encoder: Encoder, task_dir: Path, split: str) -> float:
    from ranx import Qrels, Run, evaluate

    task = load_retrieval_task(task_dir, split=split)
    doc_ids = list(task.corpus)
    docs = encoder.encode_document([task.corpus[d] for d in doc_ids], batch_size=32)
    query_ids = list(task.queries)
    queries = encoder.encode_query([task.queries[q] for q in query_ids])
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}
    return float(evaluate(Qrels(task.qrels), Run(run), "ndcg@10"))


@pytest.mark.slow
def test_default_model_reaches_debian_dev_baseline(default_encoder: Encoder, dev_data: Path) -> None:
    score = ndcg_at_10(default_encoder, dev_data / "DebianDescRetrieval", "test_en")
    assert score == pytest.approx(0.910, abs=0.01), score
