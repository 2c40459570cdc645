"""Matryoshka representation learning: the loss summed over truncated embedding sizes.

RECIPE.md, "Architecture": KaLM trains dims 896/512/256/128/64 with loss weights
1/0.3/0.2/0.1/0.1, all dims every step. Truncated embeddings are re-normalised before scoring
(see ``similarity.truncate_normalize``), so each term is a cosine-similarity loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from kalm_rag.errors import ConfigError


def resolve_matryoshka(
    dims: Sequence[int], weights: Sequence[float], model_dim: int
) -> tuple[tuple[int, float], ...]:
    """The (dim, weight) terms to train for a model whose embeddings have ``model_dim`` features.

    Dims above ``model_dim`` are clipped to it; when several collapse onto ``model_dim`` the
    full-size term keeps the largest of their weights (KaLM's 896 with weight 1 on a 384-d model
    becomes 384 with weight 1, rather than 1 + 0.3 from the 512 term meant for a bigger model).
    No dims at all means the full dimension with weight 1. Terms come largest dim first.
    """
    if model_dim <= 0:
        raise ConfigError(f"model_dim must be positive, got {model_dim}")
    if len(dims) != len(weights):
        raise ConfigError(f"{len(dims)} matryoshka dims but {len(weights)} weights; give one weight per dim")
    if not dims:
        return ((model_dim, 1.0),)
    merged: dict[int, float] = {}
    for dim, weight in zip(dims, weights, strict=True):
        clipped = min(dim, model_dim)
        merged[clipped] = max(weight, merged.get(clipped, 0.0))
    return tuple(sorted(merged.items(), reverse=True))


def matryoshka_sum(
    loss_at_dim: Callable[[int], torch.Tensor],
    dims: Sequence[int],
    weights: Sequence[float],
    model_dim: int,
) -> torch.Tensor:
    """``sum_k weight_k * loss_at_dim(dim_k)`` over the resolved terms (largest dim first)."""
    terms = resolve_matryoshka(dims, weights, model_dim)
    total = terms[0][1] * loss_at_dim(terms[0][0])
    for dim, weight in terms[1:]:
        total = total + weight * loss_at_dim(dim)
    return total
