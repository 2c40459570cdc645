"""Reciprocal rank fusion: merge ranked lists (dense hits, BM25 hits, ...) into one ranking.

RRF (Cormack, Clarke and Buettcher, SIGIR 2009) scores an item by ``sum_r w_r / (k + rank_r)``
over the rankings it appears in (ranks start at 1). It needs no score calibration between
engines, which is why hybrid dense + BM25 search uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

from kalm_rag.errors import InvalidInputError
from kalm_rag.index.base import Payload, SearchHit


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[SearchHit | str]],
    k: float = 60,
    *,
    weights: Sequence[float] | None = None,
    limit: int | None = None,
) -> list[SearchHit]:
    """Fuse best-first rankings of hits (or plain ids) into one best-first list of hits.

    The fused hit's score is its RRF score; its payload is the first payload any ranking
    carried for that id. An id repeated within one ranking counts at its best rank only.
    Ties keep the order in which ids were first seen (rankings in order, best first).
    """
    if isinstance(k, bool) or not isinstance(k, int | float) or k < 0:
        raise InvalidInputError(f"k must be a non-negative number, got {k!r}")
    if weights is None:
        weights = [1.0] * len(rankings)
    elif len(weights) != len(rankings):
        raise InvalidInputError(f"got {len(rankings)} rankings but {len(weights)} weights")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError(f"limit must be a positive integer or None, got {limit!r}")
    scores: dict[str, float] = {}
    payloads: dict[str, Payload | None] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            item_id = item.id if isinstance(item, SearchHit) else item
            if not isinstance(item_id, str):
                raise InvalidInputError(f"rankings must hold SearchHit objects or string ids, got {item!r}")
            if item_id in seen:
                continue
            seen.add(item_id)
            scores[item_id] = scores.get(item_id, 0.0) + weight / (k + rank)
            if payloads.get(item_id) is None:
                payloads[item_id] = item.payload if isinstance(item, SearchHit) else None
    fused = sorted(scores, key=lambda i: -scores[i])  # stable: first-seen order breaks ties
    return [SearchHit(i, scores[i], payloads[i]) for i in fused[:limit]]
