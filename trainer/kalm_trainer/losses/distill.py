"""Score distillation: KL between teacher and student distributions over the same candidates.

RECIPE.md, "Stages": KaLM v2.5 adds contrastive distillation with fine-grained soft labels from
a stronger teacher; neither the teacher nor the loss is published. This is the standard form:
``KL(softmax(t / T_t) || softmax(s / T_s))`` per query, averaged over queries. Teacher scores
may be precomputed (stored with the data) or computed online; they are never differentiated.
"""

from __future__ import annotations

import torch

from kalm_rag.errors import InvalidInputError


def distillation_kl(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    *,
    student_temperature: float,
    teacher_temperature: float,
) -> torch.Tensor:
    """Mean over queries of KL(teacher || student) on score rows of shape (B, C).

    A teacher score of -inf marks a candidate the teacher rules out (probability 0); it adds
    nothing to the KL. The result is exactly 0 when both sides give the same distribution.
    """
    if student_scores.shape != teacher_scores.shape or student_scores.ndim != 2:
        raise InvalidInputError(
            f"teacher scores {tuple(teacher_scores.shape)} must match the student's (batch, candidates) "
            f"scores {tuple(student_scores.shape)}"
        )
    student_log_p = torch.log_softmax(student_scores.to(torch.float32) / student_temperature, dim=-1)
    teacher_log_p = torch.log_softmax(teacher_scores.detach().to(torch.float32) / teacher_temperature, dim=-1)
    teacher_p = teacher_log_p.exp()
    # where the teacher gives probability 0, p * (log p - log q) is 0; avoid 0 * inf = nan
    per_item = torch.where(teacher_p > 0, teacher_p * (teacher_log_p - student_log_p), 0.0)
    return per_item.sum(dim=-1).mean()
