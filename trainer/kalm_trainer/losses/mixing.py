"""Online hard-negative mixing: synthesise harder negatives from a query's hardest ones.

RECIPE.md, "Loss": KaLM v2 mixes the features of existing hard negatives during training; the
code is unpublished. This follows the MoCHi-style form RECIPE.md gives: for each query take
random pairs (a, b) among its ``pool`` hardest negatives (highest scores, its positive and
masked false negatives excluded), draw ``lam ~ Beta(2, 2)`` and synthesise
``normalize(lam * h_a + (1 - lam) * h_b)``; the K synthetic negatives join the denominator.

All randomness comes from an optional ``torch.Generator`` so a step can be replayed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MixedNegatives:
    """K synthetic negatives per query and how they were made.

    ``features`` (B, K, d) unit vectors; ``valid`` (B, K) False where a pair touched a
    non-negative (only possible when a query has fewer valid negatives than the pool);
    ``pairs`` (B, K, 2) candidate indices mixed; ``lam`` (B, K) mixing coefficients.
    """

    features: torch.Tensor
    valid: torch.Tensor
    pairs: torch.Tensor
    lam: torch.Tensor


def sample_beta22(
    shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Beta(2, 2) samples: the median of three uniforms is Beta(2, 2) distributed.

    (The k-th smallest of n uniforms is Beta(k, n + 1 - k).) Unlike ``torch.distributions.Beta``
    this accepts a ``torch.Generator``, so mixing is seedable.
    """
    gen_device = generator.device if generator is not None else device
    uniforms = torch.rand((*shape, 3), generator=generator, device=gen_device)
    return uniforms.median(dim=-1).values.to(device)


def _distinct_pairs(
    rows: int, k: int, pool: int, *, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(rows, k, 2) positions in [0, pool) with the two entries of each pair different."""
    gen_device = generator.device if generator is not None else device
    first = torch.randint(0, pool, (rows, k), generator=generator, device=gen_device)
    second = torch.randint(0, pool - 1, (rows, k), generator=generator, device=gen_device)
    second = second + (second >= first).to(second.dtype)  # skip ``first``: uniform over the others
    return torch.stack([first, second], dim=-1).to(device)


def mix_hard_negatives(
    candidates: torch.Tensor,
    logits: torch.Tensor,
    negative_mask: torch.Tensor,
    *,
    k: int,
    pool: int,
    grad: bool = False,
    generator: torch.Generator | None = None,
) -> MixedNegatives | None:
    """Synthesise ``k`` negatives per query from pairs of its ``pool`` hardest negatives.

    ``candidates`` (C, d) are unit vectors, ``logits`` (B, C) the scores used to rank hardness
    and ``negative_mask`` (B, C) True where a candidate is a genuine negative of the query (not
    its positive, not a masked false negative). With ``grad=False`` the synthetic features are
    constants (as in MoCHi); the query still gets a gradient through its scores against them.
    Returns None when ``k`` is 0 or fewer than two candidates exist (nothing to mix).
    """
    pool = min(pool, candidates.shape[0])
    if k == 0 or pool < 2:
        return None
    source = candidates if grad else candidates.detach()
    ranked = logits.detach().masked_fill(~negative_mask, float("-inf"))
    hardest = ranked.topk(pool, dim=-1).indices  # (B, pool)
    hardest_valid = negative_mask.gather(1, hardest)
    slots = _distinct_pairs(logits.shape[0], k, pool, generator=generator, device=logits.device)
    pairs = torch.gather(hardest.unsqueeze(1).expand(-1, k, -1), 2, slots)  # (B, k, 2) candidate ids
    valid = torch.gather(hardest_valid.unsqueeze(1).expand(-1, k, -1), 2, slots).all(dim=-1)
    lam = sample_beta22((logits.shape[0], k), generator=generator, device=logits.device)
    mixed = lam.unsqueeze(-1) * source[pairs[..., 0]] + (1.0 - lam).unsqueeze(-1) * source[pairs[..., 1]]
    return MixedNegatives(features=F.normalize(mixed, p=2.0, dim=-1), valid=valid, pairs=pairs, lam=lam)


def mixed_negative_logits(queries: torch.Tensor, mixed: MixedNegatives, temperature: float) -> torch.Tensor:
    """Scores (B, K) of each query against its own synthetic negatives; invalid ones are -inf."""
    scores = torch.einsum("bd,bkd->bk", queries, mixed.features) / temperature
    return scores.masked_fill(~mixed.valid, float("-inf"))
