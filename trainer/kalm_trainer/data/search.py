"""Exact nearest-neighbour search in bounded memory: chunked matmul + top-k in torch.

Exact search is the right tool here (hundreds of thousands of candidates, one pass): it has
no recall loss, and chunking keeps the score matrix at ``query_block x doc_chunk`` floats.
Scores are dot products (cosine for normalised embeddings): higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

__all__ = ["TIE_TOLERANCE", "count_scores_above", "top_k_search"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: Two scores closer than this are a tie. The same pair scored by two different matmul shapes
#: can differ in the last float32 bits; without a tolerance an item could outrank itself.
TIE_TOLERANCE = 1e-5


def _as_tensor(values: npt.ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    import torch

    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-d array (n, dim), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values")
    return torch.from_numpy(array).to(device)


def _device(device: str | None) -> torch.device:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _check_dims(queries: torch.Tensor, documents: torch.Tensor) -> None:
    if queries.shape[1] != documents.shape[1]:
        raise InvalidInputError(
            f"dimension mismatch: queries {queries.shape[1]}, documents {documents.shape[1]}"
        )


def top_k_search(
    queries: npt.ArrayLike,
    documents: npt.ArrayLike,
    k: int,
    *,
    query_block: int = 1024,
    doc_chunk: int = 32768,
    device: str | None = None,
) -> tuple[FloatArray, IntArray]:
    """The ``k`` best documents per query, best first: ``(scores, indices)``, each (n_q, k').

    ``k' = min(k, n_documents)``. Memory stays at ``query_block * (doc_chunk + k)`` scores.
    """
    import torch

    if not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    dev = _device(device)
    q_all = _as_tensor(queries, "queries", dev)
    d_all = _as_tensor(documents, "documents", dev)
    _check_dims(q_all, d_all)
    k_eff = min(k, d_all.shape[0])
    out_scores = np.empty((q_all.shape[0], k_eff), dtype=np.float32)
    out_ids = np.empty((q_all.shape[0], k_eff), dtype=np.int64)
    if k_eff == 0:
        return out_scores, out_ids
    for q_start in range(0, q_all.shape[0], query_block):
        block = q_all[q_start : q_start + query_block]
        best_s = torch.empty((block.shape[0], 0), device=dev)
        best_i = torch.empty((block.shape[0], 0), dtype=torch.long, device=dev)
        for d_start in range(0, d_all.shape[0], doc_chunk):
            scores = block @ d_all[d_start : d_start + doc_chunk].T
            top_s, top_i = torch.topk(scores, min(k_eff, scores.shape[1]), dim=1)
            # merge the running best with this chunk's best, keep k
            best_s, order = torch.topk(
                torch.cat([best_s, top_s], 1), min(k_eff, best_s.shape[1] + top_s.shape[1]), 1
            )
            best_i = torch.gather(torch.cat([best_i, top_i + d_start], 1), 1, order)
        out_scores[q_start : q_start + block.shape[0]] = best_s.cpu().numpy()
        out_ids[q_start : q_start + block.shape[0]] = best_i.cpu().numpy()
    return out_scores, out_ids


def count_scores_above(
    queries: npt.ArrayLike,
    documents: npt.ArrayLike,
    thresholds: npt.ArrayLike,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
    query_block: int = 1024,
    doc_chunk: int = 32768,
    device: str | None = None,
) -> IntArray:
    """Per query ``i``: how many documents score above ``thresholds[i]`` (by more than
    :data:`TIE_TOLERANCE`), not counting the document ids in ``exclude[i]``.

    This is the rank (0 = best) an item with score ``thresholds[i]`` would get, without
    materialising a full ranking: the basis of ranking-consistency filtering.
    """
    import torch

    dev = _device(device)
    q_all = _as_tensor(queries, "queries", dev)
    d_all = _as_tensor(documents, "documents", dev)
    _check_dims(q_all, d_all)
    limits = torch.as_tensor(np.asarray(thresholds, dtype=np.float32), device=dev).reshape(-1) + TIE_TOLERANCE
    if limits.shape[0] != q_all.shape[0]:
        raise InvalidInputError(f"got {limits.shape[0]} thresholds for {q_all.shape[0]} queries")
    counts = torch.zeros(q_all.shape[0], dtype=torch.long, device=dev)
    for q_start in range(0, q_all.shape[0], query_block):
        block = q_all[q_start : q_start + query_block]
        block_limits = limits[q_start : q_start + block.shape[0], None]
        for d_start in range(0, d_all.shape[0], doc_chunk):
            scores = block @ d_all[d_start : d_start + doc_chunk].T
            counts[q_start : q_start + block.shape[0]] += (scores > block_limits).sum(1)
    if exclude is not None:
        if len(exclude) != q_all.shape[0]:
            raise InvalidInputError(f"got {len(exclude)} exclusion lists for {q_all.shape[0]} queries")
        pairs = sorted({(row, doc) for row, ids in enumerate(exclude) for doc in ids})
        if pairs:
            rows = torch.as_tensor([p[0] for p in pairs], dtype=torch.long, device=dev)
            docs = torch.as_tensor([p[1] for p in pairs], dtype=torch.long, device=dev)
            above = ((q_all[rows] * d_all[docs]).sum(1) > limits[rows]).long()
            counts -= torch.zeros_like(counts).scatter_add_(0, rows, above)
    result: IntArray = counts.cpu().numpy().astype(np.int64)
    return result
