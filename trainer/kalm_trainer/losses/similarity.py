"""Cosine scores of queries against the batch's candidate passages (pure torch).

RECIPE.md, "Loss": each query is scored against every passage in the batch: its own positive,
the other queries' positives and every hard negative in the batch. The candidate matrix is laid
out as ``[p_0 .. p_{B-1}, negs[0, 0] .. negs[0, n-1], negs[1, 0] .. negs[B-1, n-1]]`` so query
``i``'s positive sits in column ``i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kalm_rag.errors import InvalidInputError


def truncate_normalize(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """Keep the first ``dim`` features (Matryoshka), upcast to float32 and L2-normalise.

    Normalising after truncation makes every truncated score a cosine similarity. Losses run in
    float32 so bf16 models do not lose the small score differences a 0.01 temperature amplifies.
    """
    return F.normalize(embeddings[..., :dim].to(torch.float32), p=2.0, dim=-1)


def candidate_passages(positives: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
    """Stack positives (B, d) and hard negatives (B, n, d) into candidates (B + B*n, d)."""
    if negatives is None or negatives.shape[1] == 0:
        return positives
    return torch.cat([positives, negatives.reshape(-1, negatives.shape[-1])], dim=0)


def in_batch_logits(queries: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scores (B, C) of every query against every candidate, divided by the temperature."""
    return queries @ candidates.T / temperature


def group_scores(
    queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None
) -> torch.Tensor:
    """Scores (B, 1+n) of each query against its own group: its positive, then its negatives.

    These are the candidates a teacher scores for distillation (no temperature applied here).
    """
    group = positives.unsqueeze(1) if negatives is None else torch.cat([positives.unsqueeze(1), negatives], 1)
    return torch.einsum("bd,bcd->bc", queries, group)


def check_batch(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None) -> None:
    """Raise InvalidInputError unless q (B, d), p (B, d) and negs (B, n, d) or None agree."""
    if queries.ndim != 2 or positives.ndim != 2:
        raise InvalidInputError(
            f"queries and positives must be 2-d (batch, dim), got shapes {tuple(queries.shape)} "
            f"and {tuple(positives.shape)}"
        )
    if queries.shape != positives.shape:
        raise InvalidInputError(
            f"queries {tuple(queries.shape)} and positives {tuple(positives.shape)} must have the same shape"
        )
    if queries.shape[0] == 0:
        raise InvalidInputError("the batch is empty: queries have 0 rows")
    if negatives is not None and (
        negatives.ndim != 3
        or negatives.shape[0] != queries.shape[0]
        or negatives.shape[2] != queries.shape[1]
    ):
        raise InvalidInputError(
            f"negatives must have shape (batch={queries.shape[0]}, n, dim={queries.shape[1]}), "
            f"got {tuple(negatives.shape)}"
        )
