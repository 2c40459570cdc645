"""Metric plumbing: score matrices and runs in, library-computed metrics out.

Ranking metrics come from trec_eval through pytrec_eval (the evaluator MTEB uses), correlations
from scipy; this module only shapes the inputs (top-k runs from score matrices, qrels for bitext
mining) and averages per-query values. (ranx gives the same numbers but compiles with numba on
first use, which costs minutes on a cold 2-core machine.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import InvalidInputError, require

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

#: the retrieval metrics reported everywhere (MTEB calls them ndcg_at_10, recall_at_100, mrr_at_10)
RETRIEVAL_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def top_k_run(
    scores: npt.ArrayLike, query_ids: Sequence[str], doc_ids: Sequence[str], *, k: int = 100
) -> Run:
    """Keep each query's ``k`` best documents of a (queries, documents) score matrix."""
    matrix = np.asarray(scores, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape != (len(query_ids), len(doc_ids)):
        raise InvalidInputError(
            f"scores must have shape ({len(query_ids)}, {len(doc_ids)}) for the given ids, got {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        raise InvalidInputError("scores contain NaN or inf")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    k = min(k, len(doc_ids))
    if k == 0:
        return {q: {} for q in query_ids}
    top = np.argpartition(-matrix, k - 1, axis=1)[:, :k]
    return {
        query_id: {doc_ids[j]: float(matrix[row, j]) for j in top[row]}
        for row, query_id in enumerate(query_ids)
    }


def retrieval_metrics(
    qrels: Qrels, run: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = RETRIEVAL_METRICS
) -> dict[str, float]:
    """Means over the judged queries in ``qrels``, computed by trec_eval (pytrec_eval).

    Names are ``ndcg@k``, ``recall@k``, ``precision@k``, ``hit@k`` and ``mrr@k``; a query missing
    from ``run`` scores zero. ``mrr@k`` is trec_eval's reciprocal rank over each query's top k.
    """
    pytrec_eval: Any = require("pytrec_eval", "eval")
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    if not judged:
        raise InvalidInputError("qrels hold no judged queries")
    parsed = [_parse_metric(name) for name in metrics]
    results = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in judged}
    plain = {measure for measure, key, cut in parsed if cut is None}
    per_query = pytrec_eval.RelevanceEvaluator(judged, plain).evaluate(results) if plain else {}
    out: dict[str, float] = {}
    for name, (measure, key, cut) in zip(metrics, parsed, strict=True):
        values = per_query
        if cut is not None:  # reciprocal rank has no cutoff in trec_eval: cut the run instead
            cut_run = {q: dict(_ranked(docs)[:cut]) for q, docs in results.items()}
            values = pytrec_eval.RelevanceEvaluator(judged, {measure}).evaluate(cut_run)
        # trec_eval leaves out queries without results: they count as zero here
        out[name] = float(sum(values.get(q, {}).get(key, 0.0) for q in judged) / len(judged))
    return out


_MEASURES = {"ndcg": "ndcg_cut", "recall": "recall", "precision": "P", "hit": "success"}


def _parse_metric(name: str) -> tuple[str, str, int | None]:
    """``ndcg@10`` -> (trec_eval measure, result key, run cutoff for MRR or None)."""
    kind, _, k = name.partition("@")
    if not k.isdigit() or int(k) < 1 or (kind not in _MEASURES and kind != "mrr"):
        known = ", ".join([*_MEASURES, "mrr"])
        raise InvalidInputError(f"unknown metric {name!r}; use <kind>@<k> with kind one of {known}")
    if kind == "mrr":
        return "recip_rank", "recip_rank", int(k)
    return f"{_MEASURES[kind]}.{k}", f"{_MEASURES[kind]}_{k}", None


def _ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    # trec_eval's order: score descending, ties by document id descending
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def bitext_accuracy(scores: npt.ArrayLike) -> float:
    """Share of rows whose best-scoring column is their own translation (row i <-> column i).

    This is MTEB's BitextMining accuracy: nearest neighbour from sentences1 into sentences2.
    """
    matrix = np.asarray(scores, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise InvalidInputError(f"bitext scores must be a non-empty square matrix, got shape {matrix.shape}")
    ids = [str(i) for i in range(matrix.shape[0])]
    return bitext_accuracy_from_run(top_k_run(matrix, ids, ids, k=1), len(ids))


def bitext_accuracy_from_run(run: Mapping[str, Mapping[str, float]], n: int) -> float:
    """Bitext accuracy from a run over ids ``"0"..str(n-1)`` where id i's translation is id i."""
    if n < 1:
        raise InvalidInputError(f"need at least one pair, got n={n}")
    ids = [str(i) for i in range(n)]
    return retrieval_metrics({i: {i: 1} for i in ids}, run, ["hit@1"])["hit@1"]


def spearman(predicted: npt.ArrayLike, gold: npt.ArrayLike) -> float:
    """Spearman rank correlation (scipy), as MTEB reports for STS."""
    stats = require("scipy.stats", "eval")
    left = np.asarray(predicted, dtype=np.float64)
    right = np.asarray(gold, dtype=np.float64)
    if left.shape != right.shape or left.ndim != 1 or left.size < 2:
        raise InvalidInputError(
            f"need two 1-D arrays of the same length >= 2, got shapes {left.shape} and {right.shape}"
        )
    result = stats.spearmanr(left, right)  # type: ignore[attr-defined]
    return float(result.statistic)
