"""Online hard-negative mixing: seeded, hardest-pair selection, gradient flag, K = 0."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kalm_trainer.losses import (
    LossConfig,
    candidate_passages,
    focal_infonce_loss,
    in_batch_logits,
    kalm_contrastive_loss,
    mix_hard_negatives,
    sample_beta22,
    truncate_normalize,
)


def full_dim(**overrides: Any) -> LossConfig:
    """A config without Matryoshka terms: the full embedding only."""
    return LossConfig(matryoshka_dims=(), matryoshka_weights=(), **overrides)


def batch(seed: int = 0, size: int = 4, negatives: int = 3, dim: int = 8) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(size, dim, generator=g, requires_grad=True),
        torch.randn(size, dim, generator=g, requires_grad=True),
        torch.randn(size, negatives, dim, generator=g, requires_grad=True),
    )


def scored(
    q: torch.Tensor, p: torch.Tensor, n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    candidates = candidate_passages(truncate_normalize(p, 8), truncate_normalize(n, 8))
    logits = in_batch_logits(truncate_normalize(q, 8), candidates, 0.05)
    is_negative = torch.ones_like(logits, dtype=torch.bool)
    is_negative[torch.arange(q.shape[0]), torch.arange(q.shape[0])] = False
    return candidates, logits, is_negative


def test_beta22_moments_and_support() -> None:
    samples = sample_beta22(
        (200_000,), generator=torch.Generator().manual_seed(0), device=torch.device("cpu")
    )
    assert samples.min() > 0.0 and samples.max() < 1.0
    # Beta(2, 2): mean 1/2, variance ab / ((a + b)^2 (a + b + 1)) = 1/20
    assert abs(samples.mean().item() - 0.5) < 0.005
    assert abs(samples.var().item() - 0.05) < 0.002


def test_mixed_features_are_normalised_mixes_of_distinct_hardest_negatives() -> None:
    q, p, n = batch()
    candidates, logits, is_negative = scored(q, p, n)
    pool = 5
    mixed = mix_hard_negatives(
        candidates, logits, is_negative, k=6, pool=pool, generator=torch.Generator().manual_seed(1)
    )
    assert mixed is not None and mixed.features.shape == (4, 6, 8)
    assert mixed.valid.all()
    torch.testing.assert_close(mixed.features.norm(dim=-1), torch.ones(4, 6))
    a, b = mixed.pairs[..., 0], mixed.pairs[..., 1]
    assert (a != b).all()
    expected = F.normalize(
        mixed.lam[..., None] * candidates[a] + (1 - mixed.lam[..., None]) * candidates[b], dim=-1
    )
    torch.testing.assert_close(mixed.features, expected)
    hardest = logits.masked_fill(~is_negative, float("-inf")).topk(pool, dim=-1).indices
    for row in range(4):
        allowed = set(hardest[row].tolist())
        assert set(mixed.pairs[row].flatten().tolist()) <= allowed
        assert row not in allowed  # never the query's own positive


def test_mixing_is_seedable() -> None:
    q, p, n = batch()
    args = scored(q, p, n)
    first = mix_hard_negatives(*args, k=3, pool=4, generator=torch.Generator().manual_seed(7))
    again = mix_hard_negatives(*args, k=3, pool=4, generator=torch.Generator().manual_seed(7))
    other = mix_hard_negatives(*args, k=3, pool=4, generator=torch.Generator().manual_seed(8))
    assert first is not None and again is not None and other is not None
    assert torch.equal(first.features, again.features) and torch.equal(first.pairs, again.pairs)
    assert not torch.equal(first.lam, other.lam)


def test_k_zero_equals_no_mixing_and_k_positive_adds_to_the_denominator() -> None:
    q, p, n = batch()
    config = full_dim(gamma=0.5, temperature=0.05, mix_k=0)
    _, logits, _ = scored(q, p, n)
    no_mixing = focal_infonce_loss(logits, torch.arange(4), gamma=0.5)
    assert torch.equal(kalm_contrastive_loss(q, p, n, config=config), no_mixing)
    mixing = full_dim(gamma=0.5, temperature=0.05, mix_k=4)
    assert (
        kalm_contrastive_loss(q, p, n, config=mixing, generator=torch.Generator().manual_seed(0)) > no_mixing
    )


def test_mix_grad_flag_decides_whether_passages_get_gradient_from_synthetic_negatives() -> None:
    def grads(flow: bool) -> tuple[torch.Tensor, ...]:
        q, p, n = batch()
        config = full_dim(temperature=0.05, mix_k=4, mix_grad=flow)
        loss = kalm_contrastive_loss(q, p, n, config=config, generator=torch.Generator().manual_seed(3))
        return loss, *torch.autograd.grad(loss, [q, p, n])

    loss_off, q_off, p_off, n_off = grads(False)
    loss_on, q_on, p_on, n_on = grads(True)
    assert torch.equal(loss_off, loss_on)  # same forward pass
    torch.testing.assert_close(q_off, q_on)  # the query is pushed away from synthetic negatives either way
    assert not torch.allclose(n_off, n_on) and not torch.allclose(p_off, p_on)

    q, p, n = batch()
    candidates, logits, is_negative = scored(q, p, n)
    constant = mix_hard_negatives(candidates, logits, is_negative, k=2, pool=4, grad=False)
    flowing = mix_hard_negatives(candidates, logits, is_negative, k=2, pool=4, grad=True)
    assert constant is not None and flowing is not None
    assert not constant.features.requires_grad and flowing.features.requires_grad


def test_pairs_touching_a_non_negative_are_dropped() -> None:
    # two queries, in-batch only: each query has exactly one negative, so every pair of its two
    # "hardest" candidates includes its own positive and must not enter the denominator
    q, p, _ = batch(size=2)
    plain = full_dim(temperature=0.05)
    mixing = full_dim(temperature=0.05, mix_k=3)
    with_mixing = kalm_contrastive_loss(q, p, config=mixing, generator=torch.Generator().manual_seed(0))
    assert torch.equal(with_mixing, kalm_contrastive_loss(q, p, config=plain))


def test_same_label_candidates_are_never_mixed() -> None:
    q, p, n = batch(size=4, negatives=1)
    labels = torch.tensor([[0, 9], [0, 9], [1, 9], [1, 9]])
    candidates, logits, is_negative = scored(q, p, n)
    is_negative[0, 1] = is_negative[1, 0] = is_negative[2, 3] = is_negative[3, 2] = False
    mixed = mix_hard_negatives(
        candidates, logits, is_negative, k=8, pool=8, generator=torch.Generator().manual_seed(0)
    )
    assert mixed is not None
    for row in range(4):
        used = mixed.pairs[row][mixed.valid[row]].flatten().tolist()
        assert all(is_negative[row, c] for c in used)
    config = full_dim(temperature=0.05, mix_k=8, mix_pool=8)
    loss = kalm_contrastive_loss(
        q, p, n, labels=labels, config=config, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(loss)
