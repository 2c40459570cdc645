"""Choosing a soup's ingredients on purpose: the last N checkpoints, and a dev check.

Averaging every checkpoint of a run mixes barely-trained early ones into the final model. A
recipe's ``[soup]`` therefore picks its ingredients:

- ``last_n``: only the last N checkpoints (by step) of each ``"@<stage>:checkpoints"`` entry;
- ``dev_data``: every candidate is scored on a held-out file of pairs / examples - MRR@10 of
  each query's positives among all candidates of its task (queries with their instructions,
  candidates with the document prompt, as the SDK embeds them) - and only candidates within
  ``dev_tolerance`` of the best score are averaged. The scores go to the soup's manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_trainer.data.convert import pair_to_example
from kalm_trainer.data.embedding import (
    TextEncoder,
    build_pool,
    encode_pool,
    encode_queries,
    group_by_task,
    pool_prompt,
)
from kalm_trainer.data.jsonl import read_with
from kalm_trainer.data.schema import TrainingExample, example_from_dict

__all__ = ["accepted_by_dev", "dev_mrr", "last_checkpoints", "load_dev_examples", "score_models"]

logger = logging.getLogger("kalm_trainer")


def last_checkpoints(folders: Sequence[Path], n: int) -> list[Path]:
    """The last ``n`` of ``folders`` (given in step order); all of them when ``n`` is 0."""
    if n < 0:
        raise ConfigError(f"soup.last_n must be >= 0, got {n}")
    return list(folders[-n:]) if n else list(folders)


def _parse_dev(obj: object) -> TrainingExample:
    # pair lines ({"query", "positive", ...}) or training examples ({"query", "positives", ...})
    if isinstance(obj, dict) and "positive" in obj:
        return pair_to_example(obj)
    return example_from_dict(obj)


def load_dev_examples(
    paths: Sequence[Path], *, max_examples: int = 500, seed: int = 0
) -> list[TrainingExample]:
    """Dev examples with at least one positive; a seeded sample of ``max_examples`` (0 = all)."""
    examples = [ex for ex in read_with(list(paths), _parse_dev).examples if ex.positives]
    if not examples:
        raise InvalidInputError(f"soup.dev_data {[str(p) for p in paths]} holds no example with a positive")
    if 0 < max_examples < len(examples):
        picks = np.random.default_rng(seed).choice(len(examples), size=max_examples, replace=False)
        examples = [examples[i] for i in sorted(picks.tolist())]
    return examples


def dev_mrr(encoder: TextEncoder, examples: Sequence[TrainingExample], *, k: int = 10) -> float:
    """Mean reciprocal rank (cut at ``k``) of each query's best positive among all candidates
    (positives and negatives, deduplicated) of its task."""
    from kalm_trainer.data.filtering import best_positive_ranks_from_embeddings

    reciprocal: list[float] = []
    for positions in group_by_task(examples).values():
        group = [examples[p] for p in positions]
        pool = build_pool(group)
        positive_ids = [[pool.ids[t] for t in ex.positives] for ex in group]
        exclude = [[pool.ids[ex.query]] if ex.query in pool.ids else [] for ex in group]
        ranks = best_positive_ranks_from_embeddings(
            encode_queries(encoder, group),
            encode_pool(encoder, pool, *pool_prompt(group)),
            positive_ids,
            exclude,
        )
        reciprocal += [1.0 / (int(r) + 1) if r < k else 0.0 for r in ranks]
    return float(np.mean(reciprocal))


def score_models(
    folders: Sequence[Path], examples: Sequence[TrainingExample], *, device: str | None = None
) -> list[float]:
    """Dev MRR@10 of every model folder (loaded one at a time)."""
    from kalm_rag.encoder import Encoder

    scores = []
    start = time.monotonic()
    for done, folder in enumerate(folders, start=1):
        encoder = Encoder.from_pretrained(folder, device=device, dtype="float32")
        scores.append(dev_mrr(encoder, examples))
        del encoder
        elapsed = time.monotonic() - start
        logger.info(
            "soup dev check %d/%d: %s MRR@10 %.4f (%.0f s, ETA %.0f s)",
            done,
            len(folders),
            folder.name,
            scores[-1],
            elapsed,
            elapsed / done * (len(folders) - done),
        )
    return scores


def accepted_by_dev(scores: Sequence[float], tolerance: float) -> list[int]:
    """Indices of the scores within ``tolerance`` of the best one (at least the best)."""
    if tolerance < 0:
        raise ConfigError(f"soup.dev_tolerance must be >= 0, got {tolerance}")
    if not scores:
        return []
    best = max(scores)
    return [i for i, s in enumerate(scores) if s >= best - tolerance - 1e-12]
