"""KaLM losses on tiny hand-computed cases and seeded random tensors (no model)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from kalm_trainer.losses import (
    LossConfig,
    candidate_passages,
    distillation_kl,
    focal_infonce_loss,
    focal_weights,
    group_scores,
    in_batch_logits,
    infonce_loss,
    kalm_contrastive_loss,
    positive_log_prob,
    resolve_matryoshka,
    truncate_normalize,
)

from kalm_rag.errors import ConfigError, InvalidInputError


def full_dim(**overrides: Any) -> LossConfig:
    """A config without Matryoshka terms: the full embedding only."""
    return LossConfig(matryoshka_dims=(), matryoshka_weights=(), **overrides)


def lse(values: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in values))


def random_batch(batch: int = 4, negatives: int = 3, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, dim, generator=g, requires_grad=True)
    p = torch.randn(batch, dim, generator=g, requires_grad=True)
    n = torch.randn(batch, negatives, dim, generator=g, requires_grad=True)
    return q, p, n


def test_in_batch_only_two_by_two_by_hand() -> None:
    eye = torch.eye(2)
    loss = kalm_contrastive_loss(eye, eye, None, config=full_dim(temperature=1.0))
    # logits = identity: each query scores e^1 against its positive and e^0 against the other
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)


def test_hard_negatives_scored_against_every_passage_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    n = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    config = full_dim(temperature=0.5)
    # candidates p0, p1, n0, n1; cosine / 0.5
    row0 = [1.2, 1.6, 0.0, 2.0]
    row1 = [1.6, 1.2, 2.0, 0.0]
    expected = ((lse(row0) - row0[0]) + (lse(row1) - row1[1])) / 2
    assert kalm_contrastive_loss(q, p, n, config=config).item() == pytest.approx(expected, abs=1e-5)
    # cosine similarity: the scale of the inputs does not matter
    assert kalm_contrastive_loss(3 * q, 0.5 * p, 7 * n, config=config).item() == pytest.approx(
        expected, abs=1e-5
    )


def test_scores_layout_puts_each_positive_in_its_query_column() -> None:
    q, p, n = (t.detach() for t in random_batch(batch=3, negatives=2, dim=4))
    candidates = candidate_passages(p, n)
    assert candidates.shape == (3 + 3 * 2, 4)
    torch.testing.assert_close(candidates[:3], p)
    torch.testing.assert_close(candidates[3:5], n[0])
    logits = in_batch_logits(q, candidates, 0.5)
    torch.testing.assert_close(logits[1, 1], q[1] @ p[1] / 0.5)
    groups = group_scores(q, p, n)
    torch.testing.assert_close(groups[2], torch.stack([q[2] @ p[2], q[2] @ n[2, 0], q[2] @ n[2, 1]]))


def test_focal_gamma_zero_equals_infonce_exactly_with_gradients() -> None:
    q, p, n = random_batch()
    logits = in_batch_logits(truncate_normalize(q, 8), candidate_passages(p, n), 0.01)
    targets = torch.arange(4)
    plain = infonce_loss(logits, targets)
    (plain_grad,) = torch.autograd.grad(plain, q, retain_graph=True)
    focal = focal_infonce_loss(logits, targets, gamma=0.0)
    (focal_grad,) = torch.autograd.grad(focal, q)
    assert torch.equal(plain, focal)
    assert torch.equal(plain_grad, focal_grad)
    composed = kalm_contrastive_loss(q, p, n, config=full_dim(gamma=0.0))
    expected = infonce_loss(
        in_batch_logits(
            truncate_normalize(q, 8),
            candidate_passages(truncate_normalize(p, 8), truncate_normalize(n, 8)),
            0.01,
        ),
        targets,
    )
    assert torch.equal(composed, expected)


def test_focal_weight_by_hand_and_reduces_the_loss() -> None:
    eye = torch.eye(2)
    config = full_dim(temperature=1.0, gamma=2.0)
    nll = math.log1p(math.exp(-1.0))
    expected = (1 - math.exp(-nll)) ** 2 * nll
    assert kalm_contrastive_loss(eye, eye, config=config).item() == pytest.approx(expected, abs=1e-6)
    q, p, n = random_batch()
    plain = kalm_contrastive_loss(q, p, n, config=full_dim(temperature=0.1))
    focal = kalm_contrastive_loss(q, p, n, config=full_dim(temperature=0.1, gamma=0.5))
    assert 0 < focal < plain


def test_focal_detach_flag_controls_the_gradient_through_the_weight() -> None:
    q, p, n = random_batch()
    targets = torch.arange(4)

    def logits() -> torch.Tensor:
        candidates = candidate_passages(truncate_normalize(p, 8), truncate_normalize(n, 8))
        return in_batch_logits(truncate_normalize(q, 8), candidates, 0.1)

    (detached,) = torch.autograd.grad(focal_infonce_loss(logits(), targets, gamma=2.0, detach_weight=True), q)
    (attached,) = torch.autograd.grad(focal_infonce_loss(logits(), targets, gamma=2.0), q)
    log_p = positive_log_prob(logits(), targets)
    constant = focal_weights(log_p, 2.0).detach()
    (by_hand,) = torch.autograd.grad(-(constant * log_p).mean(), q)
    torch.testing.assert_close(detached, by_hand)
    assert not torch.allclose(attached, detached, atol=1e-6)


def test_focal_is_finite_when_the_positive_takes_all_the_mass() -> None:
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0]], requires_grad=True)
    loss = focal_infonce_loss(logits, torch.arange(2), gamma=0.5)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and torch.isfinite(logits.grad).all()


def test_same_label_items_leave_the_denominator() -> None:
    q, p, _ = random_batch(batch=3, negatives=0, dim=6)
    labels = torch.tensor([0, 0, 1])
    config = full_dim(temperature=1.0)
    loss = kalm_contrastive_loss(q, p, None, labels=labels, config=config)
    s = (F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T).detach().tolist()
    # query 0 and 1 share label 0: each other's positive is not a negative
    expected = (
        (lse([s[0][0], s[0][2]]) - s[0][0]) + (lse([s[1][1], s[1][2]]) - s[1][1]) + (lse(s[2]) - s[2][2])
    ) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # the masked candidate gets no gradient from the query that may not use it
    (grad_p,) = torch.autograd.grad(loss, p)
    other = kalm_contrastive_loss(q, p, None, labels=torch.tensor([0, 1, 2]), config=config)
    (grad_p_unmasked,) = torch.autograd.grad(other, p)
    assert not torch.allclose(grad_p[1], grad_p_unmasked[1])


def test_labels_per_negative_mask_hard_negatives_of_the_query_class() -> None:
    q, p, n = random_batch(batch=2, negatives=1, dim=4)
    config = full_dim(temperature=1.0)
    # query 0 has class 5; query 1's hard negative is also class 5, so query 0 must not use it
    labels = torch.tensor([[5, 7], [6, 5]])
    loss = kalm_contrastive_loss(q, p, n, labels=labels, config=config)
    c = candidate_passages(F.normalize(p, dim=-1), F.normalize(n, dim=-1))
    s = (F.normalize(q, dim=-1) @ c.T).detach().tolist()
    expected = ((lse(s[0][:3]) - s[0][0]) + (lse(s[1]) - s[1][1])) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    unlabelled = kalm_contrastive_loss(q, p, n, labels=torch.full((2, 2), -1), config=config)
    assert torch.equal(unlabelled, kalm_contrastive_loss(q, p, n, config=config))


def test_matryoshka_terms_are_clipped_to_the_model_size() -> None:
    kalm = LossConfig()
    assert resolve_matryoshka(kalm.matryoshka_dims, kalm.matryoshka_weights, 896) == (
        (896, 1.0),
        (512, 0.3),
        (256, 0.2),
        (128, 0.1),
        (64, 0.1),
    )
    assert resolve_matryoshka(kalm.matryoshka_dims, kalm.matryoshka_weights, 384) == (
        (384, 1.0),
        (256, 0.2),
        (128, 0.1),
        (64, 0.1),
    )
    assert resolve_matryoshka((), (), 32) == ((32, 1.0),)


def test_matryoshka_sums_weighted_losses_of_renormalised_truncations() -> None:
    q = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    p = torch.tensor([[2.0, -1.0], [-3.0, 1.0]])
    full = kalm_contrastive_loss(q, p, config=full_dim(temperature=1.0))
    both = kalm_contrastive_loss(
        q, p, config=LossConfig(temperature=1.0, matryoshka_dims=(2, 1), matryoshka_weights=(1.0, 0.5))
    )
    # at dim 1 the renormalised vectors are +-1: logits [[1, -1], [-1, 1]]
    assert both.item() == pytest.approx(full.item() + 0.5 * math.log1p(math.exp(-2.0)), abs=1e-6)


def test_distillation_kl_by_hand_zero_for_equal_scores_and_teacher_masks() -> None:
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    kl = distillation_kl(student, teacher, student_temperature=1.0, teacher_temperature=1.0)
    assert kl.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    masked = distillation_kl(
        student, torch.tensor([[0.0, float("-inf")]]), student_temperature=1.0, teacher_temperature=1.0
    )
    assert masked.item() == pytest.approx(math.log(2.0), abs=1e-6)
    scores = torch.randn(3, 5)
    assert (
        distillation_kl(scores, scores.clone(), student_temperature=0.02, teacher_temperature=0.02).item()
        == 0.0
    )
    with pytest.raises(InvalidInputError, match="teacher scores"):
        distillation_kl(scores, torch.randn(3, 4), student_temperature=1.0, teacher_temperature=1.0)


def test_composed_distillation_adds_nothing_when_teacher_equals_student() -> None:
    q, p, n = random_batch()
    config = LossConfig(matryoshka_dims=(8, 4), matryoshka_weights=(1.0, 0.5))
    teacher = group_scores(
        truncate_normalize(q, 8), truncate_normalize(p, 8), truncate_normalize(n, 8)
    ).detach()
    with_teacher = kalm_contrastive_loss(q, p, n, teacher_scores=teacher, config=config)
    assert with_teacher > kalm_contrastive_loss(q, p, n, config=config)  # the 4-d student differs
    full_only = full_dim()
    assert torch.equal(
        kalm_contrastive_loss(q, p, n, teacher_scores=teacher, config=full_only),
        kalm_contrastive_loss(q, p, n, config=full_only),
    )
    flipped = kalm_contrastive_loss(q, p, n, teacher_scores=-teacher, config=full_only)
    assert flipped > kalm_contrastive_loss(q, p, n, config=full_only)


def test_bf16_inputs_are_scored_in_float32() -> None:
    q, p, n = (t.detach() for t in random_batch())
    loss = kalm_contrastive_loss(q.bfloat16(), p.bfloat16(), n.bfloat16(), config=full_dim())
    assert loss.dtype == torch.float32


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"gamma": -1.0}, "gamma"),
        ({"mix_k": -1}, "mix_k"),
        ({"mix_pool": 1}, "mix_pool"),
        ({"distill_weight": float("nan")}, "distill_weight"),
        ({"matryoshka_dims": (8, 4), "matryoshka_weights": (1.0,)}, "one weight per dim"),
        ({"matryoshka_dims": (8, 8), "matryoshka_weights": (1.0, 1.0)}, "distinct"),
        ({"matryoshka_dims": (8, 0), "matryoshka_weights": (1.0, 1.0)}, "positive integers"),
        ({"matryoshka_dims": (8,), "matryoshka_weights": (0.0,)}, "matryoshka_weights"),
    ],
)
def test_bad_config_is_a_clear_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LossConfig(**overrides)  # type: ignore[arg-type]


def test_config_accepts_lists_from_toml() -> None:
    config = LossConfig(matryoshka_dims=[64, 32], matryoshka_weights=[1.0, 0.5])  # type: ignore[arg-type]
    assert config.matryoshka_dims == (64, 32) and hash(config)


def test_bad_shapes_and_labels_are_clear_errors() -> None:
    q, p, n = random_batch(batch=2, negatives=1, dim=4)
    with pytest.raises(InvalidInputError, match="same shape"):
        kalm_contrastive_loss(q, p[:1], n)
    with pytest.raises(InvalidInputError, match="negatives must have shape"):
        kalm_contrastive_loss(q, p, n[:, :, :2])
    with pytest.raises(InvalidInputError, match="labels must have shape"):
        kalm_contrastive_loss(q, p, n, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(InvalidInputError, match="integer class ids"):
        kalm_contrastive_loss(q, p, n, labels=torch.tensor([0.0, 1.0]))
