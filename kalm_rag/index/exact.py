"""Exact top-k search over a float32 matrix: the pure core of BruteForceIndex.

Also the fallback the hnswlib backend uses when a filter leaves only a few candidates, where a
graph walk would be both slower and less accurate than scoring them all.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Score at most this many query x item cells at once, to bound memory (~128 MiB of float32).
_MAX_CELLS = 1 << 25


def similarities(
    queries: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    metric: str,
    *,
    sq_norms: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Query x item similarity matrix: inner product, or negative Euclidean distance for l2."""
    dots: npt.NDArray[np.float32] = queries @ vectors.T
    if metric != "l2":
        return dots
    item_sq = sq_norms if sq_norms is not None else np.einsum("ij,ij->i", vectors, vectors)
    query_sq = np.einsum("ij,ij->i", queries, queries)
    squared: npt.NDArray[np.float32] = query_sq[:, None] + item_sq[None, :] - 2.0 * dots
    np.sqrt(np.maximum(squared, 0.0, out=squared), out=squared)
    # 0.0 - x rather than -x so an exact match scores +0.0, not -0.0
    np.subtract(0.0, squared, out=squared)
    return squared


def top_k(
    queries: npt.NDArray[np.float32],
    vectors: npt.NDArray[np.float32],
    k: int,
    metric: str,
    *,
    mask: npt.NDArray[np.bool_] | None = None,
    sq_norms: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Row indices and scores of the best ``min(k, candidates)`` items per query, best first.

    ``mask`` (one bool per item) restricts the candidates. Ties keep the lower row first so
    results are deterministic.
    """
    n_items = len(vectors) if mask is None else int(mask.sum())
    k = min(k, n_items)
    n_queries = len(queries)
    if k == 0 or n_queries == 0:
        return np.empty((n_queries, 0), np.int64), np.empty((n_queries, 0), np.float32)
    rows_idx = np.empty((n_queries, k), np.int64)
    rows_score = np.empty((n_queries, k), np.float32)
    chunk = max(1, _MAX_CELLS // max(1, len(vectors)))
    for start in range(0, n_queries, chunk):
        scores = similarities(queries[start : start + chunk], vectors, metric, sq_norms=sq_norms)
        if mask is not None:
            scores[:, ~mask] = -np.inf
        if k < scores.shape[1]:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
        part_scores = np.take_along_axis(scores, part, axis=1)
        # sort by score descending, then by row ascending for stable ties
        order = np.lexsort((part, -part_scores), axis=1)
        rows_idx[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        rows_score[start : start + chunk] = np.take_along_axis(part_scores, order, axis=1)
    return rows_idx, rows_score
