"""InfoNCE and its focal-reweighted form, on precomputed logits (pure torch).

RECIPE.md, "Loss": InfoNCE on cosine similarity with temperature 0.01; KaLM v2 adds a
focal-style weight on the per-query cross-entropy. The published description is informal; the
form used here is the one RECIPE.md gives as consistent with it:

    p_i = softmax(s_i / tau)[pos_i],    L = -mean_i (1 - p_i)^gamma * log p_i

With gamma = 0 the weight is exactly 1.0, so the loss (and its gradient) equals InfoNCE bit for
bit. Masked candidates carry -inf logits and drop out of the softmax.
"""

from __future__ import annotations

import torch

# Lower bound on 1 - p: keeps (1 - p)^(gamma - 1) finite in the backward pass when gamma < 1 and
# the positive already has all the probability mass (frequent at temperature 0.01).
_MIN_ONE_MINUS_P = 1e-12


def positive_log_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_i (B,): log-softmax of each row of ``logits`` (B, C) at column ``targets[i]``."""
    return torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)


def infonce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each query's positive: ``-mean_i log p_i``."""
    return -positive_log_prob(logits, targets).mean()


def focal_weights(log_prob: torch.Tensor, gamma: float, *, detach: bool = False) -> torch.Tensor:
    """``(1 - p)^gamma`` per query; ``detach`` turns it into a constant weight (no gradient).

    ``1 - p`` is computed as ``-expm1(log p)``, which stays accurate when p is close to 1.
    """
    one_minus_p = (-torch.expm1(log_prob)).clamp_min(_MIN_ONE_MINUS_P)
    weights = one_minus_p.pow(gamma)
    return weights.detach() if detach else weights


def focal_infonce_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, gamma: float, detach_weight: bool = False
) -> torch.Tensor:
    """Focal-reweighted InfoNCE: ``-mean_i (1 - p_i)^gamma * log p_i``.

    ``detach_weight=False`` (default) differentiates through the weight, as the standard focal
    loss does; ``True`` treats each query's weight as a constant. gamma = 0 equals
    :func:`infonce_loss` exactly.
    """
    log_prob = positive_log_prob(logits, targets)
    return -(focal_weights(log_prob, gamma, detach=detach_weight) * log_prob).mean()
