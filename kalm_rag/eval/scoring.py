"""Scores for evaluation tasks: dense (any Encoder, with the right prompts), BM25 and TF-IDF.

The prompt policy lives here so that the mteb adapter and the local benchmarks agree:

- asymmetric tasks (retrieval, reranking): queries get the model's instruction or query prompt,
  documents stay plain (or get the model's document prompt, e.g. e5's ``"passage: "``);
- symmetric tasks (STS, bitext, classification, ...): both sides are encoded as queries, which
  puts a KaLM model's task instruction on both sides (RECIPE.md) and gives e5 its ``"query: "``
  prefix on both sides, as the e5 model card asks for symmetric tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from kalm_rag.errors import InvalidInputError, require
from kalm_rag.instructions import TaskType, is_symmetric, parse_task

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder, FloatArray
    from kalm_rag.eval.metrics import Run

Side = Literal["query", "document"]


def encode_side(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    side: Side,
    task: str | TaskType = TaskType.RETRIEVAL,
    instruction: str | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
) -> FloatArray:
    """Embed one side of a task with the prompts the model expects for that side."""
    parsed = parse_task(task)
    if side not in ("query", "document"):
        raise InvalidInputError(f"side must be 'query' or 'document', got {side!r}")
    kwargs: dict[str, Any] = {"batch_size": batch_size, "show_progress": show_progress}
    # an instruction only means something to instruction-aware models; others keep their prompts
    if instruction is not None and encoder.config.instruction_template is None:
        instruction = None
    if side == "query" or is_symmetric(parsed):
        return encoder.encode_query(list(texts), task=parsed, instruction=instruction, **kwargs)
    return encoder.encode_document(list(texts), task=parsed, **kwargs)


def dense_scores(
    encoder: Encoder,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    task: str | TaskType = TaskType.RETRIEVAL,
    batch_size: int = 32,
) -> FloatArray:
    """(queries, documents) similarity matrix of ``encoder`` (cosine or dot, as it was trained)."""
    left = encode_side(encoder, queries, side="query", task=task, batch_size=batch_size)
    right = encode_side(encoder, documents, side="document", task=task, batch_size=batch_size)
    return encoder.similarity(left, right)


def dense_pair_scores(
    encoder: Encoder,
    first: Sequence[str],
    second: Sequence[str],
    *,
    task: str | TaskType = TaskType.STS,
    batch_size: int = 32,
) -> FloatArray:
    """Similarity of each pair ``(first[i], second[i])``."""
    if len(first) != len(second):
        raise InvalidInputError(f"got {len(first)} first texts but {len(second)} second texts")
    left = encode_side(encoder, first, side="query", task=task, batch_size=batch_size)
    right = encode_side(encoder, second, side="document", task=task, batch_size=batch_size)
    if encoder.config.similarity == "cosine":
        left = left / np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)
        right = right / np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)
    result: FloatArray = (left * right).sum(axis=1).astype(np.float32)
    return result


def bm25_run(
    query_ids: Sequence[str],
    queries: Sequence[str],
    doc_ids: Sequence[str],
    documents: Sequence[str],
    *,
    k: int = 100,
    k1: float = 1.5,
    b: float = 0.75,
) -> Run:
    """Top-``k`` BM25 hits per query (kalm_rag's BM25Index); documents sharing no term are left out."""
    from kalm_rag.index.bm25 import BM25Index

    if len(query_ids) != len(queries) or len(doc_ids) != len(documents):
        raise InvalidInputError("ids and texts must have the same lengths")
    index = BM25Index(k1=k1, b=b)
    index.add(list(doc_ids), list(documents))
    hits = index.search(list(queries), k=min(k, len(doc_ids)))
    return {qid: {hit.id: hit.score for hit in row} for qid, row in zip(query_ids, hits, strict=True)}


def tfidf_pair_scores(first: Sequence[str], second: Sequence[str]) -> FloatArray:
    """Cosine of TF-IDF vectors per pair (the lexical baseline for STS), BM25's tokenisation."""
    from kalm_rag.index.bm25 import tokenize

    if len(first) != len(second):
        raise InvalidInputError(f"got {len(first)} first texts but {len(second)} second texts")
    text_module: Any = require("sklearn.feature_extraction.text", "eval")
    vectorizer = text_module.TfidfVectorizer(analyzer=tokenize)
    vectors = vectorizer.fit_transform([*first, *second])  # rows are L2-normalised
    left, right = vectors[: len(first)], vectors[len(first) :]
    result: FloatArray = np.asarray(left.multiply(right).sum(axis=1), dtype=np.float32).ravel()
    return result
