"""How HnswIndex answers a filtered search: a plan per query batch, chosen from how many items
the filter allows (counted exactly from the payload index), as Qdrant's query planner does.

- **exact**: few allowed items. Their vectors are scored with one matrix product; exact, and
  cheaper than any graph walk while the allowed set is small next to the beam a filtered graph
  search needs.
- **post**: many allowed items. An unfiltered graph search fetches ``fetch`` candidates (enough
  to hold ``k`` allowed ones at the filter's selectivity, times a safety factor), the filter is
  applied to them, and rows that still lack ``k`` allowed hits are searched again with four
  times the fetch, then exactly. The result is exact whenever the unfiltered top-``fetch`` is:
  every allowed item outside it scores below every allowed item inside it.
- **callable**: hnswlib's per-node filter callable, only where the fetch would exceed
  ``max_fetch`` and exact scoring would cost more still (tens of millions of items).

Costs, measured at 100k 384-d vectors (benchmarks/results/index_filtered_100000.md, single
queries, 2 busy cores): scoring 1,000 allowed vectors exactly took 8.3 ms against 12.7 ms for the
post-filter plan (fetch 2,000); 10,000 took 137 ms against 23 ms (fetch 200); an unfiltered
search (ef 100) took 8 ms. One slot of the graph search's beam costs about as much as
``exact_cost_ratio`` (6) exactly scored vectors (less for large sets, whose gather leaves the
cache), so a filter allowing ``c`` items is scored exactly while
``c <= exact_cost_ratio * max(ef, fetch)``: at 100k and k=10 that is up to ~3.5% of the items.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Knn = Callable[[npt.NDArray[np.float32], int], tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]]


@dataclass(frozen=True)
class FilterPlan:
    strategy: Literal["exact", "post", "callable"]
    fetch: int = 0


def plan_filtered(
    allowed: int,
    live: int,
    k: int,
    *,
    ef: int,
    exact_limit: int,
    cost_ratio: float,
    oversample: float,
    max_fetch: int,
) -> FilterPlan:
    """The cheapest way to find the top ``k`` of ``allowed`` items among ``live`` ones."""
    if allowed <= max(k, exact_limit):
        return FilterPlan("exact")
    fetch = min(live, math.ceil(oversample * k * live / allowed))
    if allowed <= cost_ratio * max(ef, fetch):
        return FilterPlan("exact")
    if fetch <= max_fetch:
        return FilterPlan("post", fetch)
    return FilterPlan("callable")


def post_filter(
    knn: Knn,
    queries: npt.NDArray[np.float32],
    need: int,
    fetch: int,
    mask: npt.NDArray[np.bool_],
    max_fetch: int,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Unfiltered searches of growing depth, filtered afterwards.

    Returns (labels, distances) of shape (queries, need), best first, and the indices of rows
    that still lack ``need`` allowed hits at ``max_fetch`` (their rows hold garbage; the caller
    answers them exactly).
    """
    n = len(queries)
    labels_out = np.zeros((n, need), np.uint64)
    dist_out = np.zeros((n, need), np.float32)
    todo = np.arange(n)
    while len(todo):
        try:
            labels, distances = knn(queries[todo], fetch)
        except RuntimeError:  # hnswlib could not reach `fetch` items (deletions): exact instead
            return labels_out, dist_out, todo
        keep = mask[labels.astype(np.int64)]
        rank = np.cumsum(keep, axis=1)
        done = rank[:, -1] >= need
        if done.any():
            pick = keep[done] & (rank[done] <= need)  # exactly `need` per finished row
            labels_out[todo[done]] = labels[done][pick].reshape(-1, need)
            dist_out[todo[done]] = distances[done][pick].reshape(-1, need)
        todo = todo[~done]
        if not len(todo) or fetch >= max_fetch:
            break
        fetch = min(max_fetch, fetch * 4)
    return labels_out, dist_out, todo
