"""Ranking-consistency filtering (KaLM v1): drop a sample whose best positive is not in the
top-k of its query's retrieval over the task's candidate pool (all positives and negatives,
deduplicated). Such samples are usually false pairs or queries too vague to be useful.

The rank of the best positive is the number of pool items scoring strictly above it (ties
favour the positive); the query's own text is left out of the pool for its own ranking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.embedding import (
    TextEncoder,
    build_pool,
    encode_pool,
    encode_queries,
    group_by_task,
    load_encoder,
    pool_prompt,
    truncated_so_far,
)
from kalm_trainer.data.jsonl import OnError, read_examples, write_examples
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.data.search import TIE_TOLERANCE, count_scores_above
from kalm_trainer.progress import ProgressLog

__all__ = [
    "FilterConfig",
    "FilterResult",
    "best_positive_ranks",
    "best_positive_ranks_from_embeddings",
    "filter_ranking_consistency",
    "run_filter_step",
]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FilterConfig(StepConfig):
    top_k: int = 50
    model: str | None = None  # Encoder name or path; None = the packaged all-MiniLM-L6-v2
    device: str | None = None
    # tokens per text for this step's encoder (None: the model's own); shorter is much faster on CPU
    max_length: int | None = None
    exclude_query: bool = True
    on_error: OnError = "raise"

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {self.max_length}")


@dataclass(slots=True)
class FilterResult:
    kept: list[TrainingExample]
    ranks: list[int]  # rank of the best positive of every input example (0 = first)
    kept_per_task: Counter[str] = field(default_factory=Counter)
    dropped_per_task: Counter[str] = field(default_factory=Counter)


def best_positive_ranks(
    scores: npt.ArrayLike,
    positive_ids: Sequence[Sequence[int]],
    exclude_ids: Sequence[Sequence[int]] | None = None,
) -> IntArray:
    """Rank (0-based) of each query's best positive in a full score matrix (n_queries, n_pool).

    Reference implementation on a dense matrix; :func:`best_positive_ranks_from_embeddings`
    computes the same in bounded memory.
    """
    matrix = np.asarray(scores, dtype=np.float32)
    if matrix.ndim != 2 or len(positive_ids) != matrix.shape[0]:
        raise InvalidInputError(
            f"scores shape {matrix.shape} does not match {len(positive_ids)} positive lists"
        )
    ranks = np.empty(matrix.shape[0], dtype=np.int64)
    for row, ids in enumerate(positive_ids):
        if not len(ids):
            raise InvalidInputError(f"query {row} has no positive to rank")
        above = matrix[row] > matrix[row, list(ids)].max() + TIE_TOLERANCE
        if exclude_ids is not None and len(exclude_ids[row]):
            above[list(exclude_ids[row])] = False
        ranks[row] = int(above.sum())
    return ranks


def best_positive_ranks_from_embeddings(
    queries: npt.ArrayLike,
    pool: npt.ArrayLike,
    positive_ids: Sequence[Sequence[int]],
    exclude_ids: Sequence[Sequence[int]] | None = None,
    *,
    device: str | None = None,
    query_block: int = 1024,
    doc_chunk: int = 32768,
) -> IntArray:
    """:func:`best_positive_ranks` for ``scores = queries @ pool.T``, chunked."""
    q = np.asarray(queries, dtype=np.float32)
    d = np.asarray(pool, dtype=np.float32)
    if len(positive_ids) != q.shape[0]:
        raise InvalidInputError(f"{len(positive_ids)} positive lists for {q.shape[0]} queries")
    if any(not len(ids) for ids in positive_ids):
        raise InvalidInputError("every query needs at least one positive to rank")
    rows = np.repeat(np.arange(q.shape[0]), [len(ids) for ids in positive_ids])
    cols = np.fromiter((i for ids in positive_ids for i in ids), dtype=np.int64, count=rows.shape[0])
    pair_scores = np.empty(rows.shape[0], dtype=np.float32)
    for start in range(0, rows.shape[0], 65536):  # bounded memory: gather a slice at a time
        part = slice(start, start + 65536)
        pair_scores[part] = np.einsum("ij,ij->i", q[rows[part]], d[cols[part]])
    best = np.full(q.shape[0], -np.inf, dtype=np.float32)
    np.maximum.at(best, rows, pair_scores)
    return count_scores_above(
        q, d, best, exclude=exclude_ids, device=device, query_block=query_block, doc_chunk=doc_chunk
    )


def filter_ranking_consistency(
    examples: Sequence[TrainingExample],
    encoder: TextEncoder,
    *,
    top_k: int = 50,
    exclude_query: bool = True,
    device: str | None = None,
) -> FilterResult:
    """Keep the examples whose best positive ranks in the top ``top_k`` of their task's pool."""
    ranks = np.zeros(len(examples), dtype=np.int64)
    groups = group_by_task(examples)
    progress = ProgressLog("filter_ranking", len(examples))
    for task, positions in groups.items():
        group = [examples[p] for p in positions]
        if any(not ex.positives for ex in group):
            raise InvalidInputError(
                f"task {task!r} has examples without positives; label them before filtering"
            )
        pool = build_pool(group)
        positive_ids = [[pool.ids[t] for t in ex.positives] for ex in group]
        exclude = [[pool.ids[ex.query]] if exclude_query and ex.query in pool.ids else [] for ex in group]
        query_vectors = encode_queries(encoder, group)
        pool_vectors = encode_pool(encoder, pool, *pool_prompt(group))
        ranks[positions] = best_positive_ranks_from_embeddings(
            query_vectors, pool_vectors, positive_ids, exclude, device=device
        )
        progress.update(len(group), f"task {task}: {len(group)} queries, {len(pool.texts)} candidates")
    result = FilterResult(kept=[], ranks=[int(r) for r in ranks])
    for task in groups:  # every task appears in the report, also with zero drops
        result.kept_per_task[task] += 0
        result.dropped_per_task[task] += 0
    for ex, rank in zip(examples, ranks, strict=True):
        if rank < top_k:
            result.kept.append(ex)
            result.kept_per_task[ex.task] += 1
        else:
            result.dropped_per_task[ex.task] += 1
    return result


def run_filter_step(config: FilterConfig, inputs: Sequence[Path], output_dir: Path) -> dict[str, Any]:
    """Step shell: read inputs, filter with the configured encoder, write ``examples.jsonl``."""
    report = read_examples(inputs, on_error=config.on_error)
    encoder = load_encoder(config.model, device=config.device, max_length=config.max_length)
    truncated_before = truncated_so_far(encoder)
    result = filter_ranking_consistency(
        report.examples, encoder, top_k=config.top_k, exclude_query=config.exclude_query, device=config.device
    )
    written = write_examples(output_dir / "examples.jsonl", result.kept)
    return {
        **report.counts,
        "written": written,
        "dropped": sum(result.dropped_per_task.values()),
        "kept_per_task": dict(result.kept_per_task),
        "dropped_per_task": dict(result.dropped_per_task),
        # texts cut to the encoder's max_length while ranking (this process's share)
        "texts_truncated": truncated_so_far(encoder) - truncated_before,
        "skipped_lines": [str(e) for e in report.skipped[:100]],
    }
