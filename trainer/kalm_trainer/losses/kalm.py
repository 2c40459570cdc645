"""The KaLM training loss: the small pieces of this package composed in the recipe's order.

Per Matryoshka dim (RECIPE.md: 896/512/256/128/64, weights 1/.3/.2/.1/.1):
truncate + re-normalise -> score every query against every passage of the (gathered) batch ->
mask same-label false negatives -> append mixed hard negatives -> focal InfoNCE (gamma = 0 is
plain InfoNCE) -> plus weighted KL distillation when teacher scores are given.
"""

from __future__ import annotations

import torch

from kalm_trainer.losses.config import LossConfig
from kalm_trainer.losses.contrastive import focal_infonce_loss
from kalm_trainer.losses.distill import distillation_kl
from kalm_trainer.losses.distributed import gather_with_local_grad, is_distributed, world_size
from kalm_trainer.losses.masks import same_label_mask, split_labels
from kalm_trainer.losses.matryoshka import matryoshka_sum
from kalm_trainer.losses.mixing import mix_hard_negatives, mixed_negative_logits
from kalm_trainer.losses.similarity import (
    candidate_passages,
    check_batch,
    group_scores,
    in_batch_logits,
    truncate_normalize,
)

DEFAULT_LOSS_CONFIG = LossConfig()


def kalm_contrastive_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    labels: torch.Tensor | None = None,
    teacher_scores: torch.Tensor | None = None,
    config: LossConfig = DEFAULT_LOSS_CONFIG,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scalar KaLM loss for one (local) batch of pooled, not necessarily normalised, embeddings.

    Shapes: ``queries`` and ``positives`` (B, d); ``negatives`` (B, n, d) hard negatives or None
    for in-batch negatives only; ``labels`` (B,) or (B, 1 + n) integer class ids for
    classification/clustering data (-1 = unlabelled; see ``masks.split_labels``);
    ``teacher_scores`` (B, 1 + n) a teacher's scores of each query's own [positive, negatives].
    ``generator`` seeds hard-negative mixing. With ``config.gather_across_processes`` under an
    initialised multi-process group, queries, passages and labels are all-gathered and the
    contrastive term is multiplied by the world size (see ``distributed``); distillation stays
    local. Every process must pass negatives (same n) and labels alike, since each is a
    collective. Computation runs in float32 whatever the input dtype.
    """
    check_batch(queries, positives, negatives)
    num_negatives = 0 if negatives is None else negatives.shape[1]
    if labels is not None:
        split_labels(labels, queries.shape[0], num_negatives)  # validate the local shape early
    gather = config.gather_across_processes and is_distributed()
    all_q, all_p, all_n, all_labels = queries, positives, negatives, labels
    if gather:
        all_q, all_p = gather_with_local_grad(queries), gather_with_local_grad(positives)
        all_n = None if negatives is None else gather_with_local_grad(negatives)
        all_labels = None if labels is None else gather_with_local_grad(labels)
    scale = float(world_size()) if gather else 1.0

    def loss_at_dim(dim: int) -> torch.Tensor:
        q = truncate_normalize(all_q, dim)
        candidates = candidate_passages(
            truncate_normalize(all_p, dim), None if all_n is None else truncate_normalize(all_n, dim)
        )
        logits = in_batch_logits(q, candidates, config.temperature)
        targets = torch.arange(q.shape[0], device=q.device)
        is_negative = torch.ones_like(logits, dtype=torch.bool)
        is_negative[targets, targets] = False
        if all_labels is not None:
            false_negatives = same_label_mask(*split_labels(all_labels, q.shape[0], num_negatives))
            logits = logits.masked_fill(false_negatives, float("-inf"))
            is_negative &= ~false_negatives
        mixed = mix_hard_negatives(
            candidates,
            logits,
            is_negative,
            k=config.mix_k,
            pool=config.mix_pool,
            grad=config.mix_grad,
            generator=generator,
        )
        if mixed is not None:
            logits = torch.cat([logits, mixed_negative_logits(q, mixed, config.temperature)], dim=1)
        loss = scale * focal_infonce_loss(
            logits, targets, gamma=config.gamma, detach_weight=config.focal_detach
        )
        if teacher_scores is not None and config.distill_weight > 0:
            student = group_scores(
                truncate_normalize(queries, dim),
                truncate_normalize(positives, dim),
                None if negatives is None else truncate_normalize(negatives, dim),
            )
            loss = loss + config.distill_weight * distillation_kl(
                student,
                teacher_scores,
                student_temperature=config.distill_student_temperature,
                teacher_temperature=config.distill_teacher_temperature,
            )
        return loss

    return matryoshka_sum(loss_at_dim, config.matryoshka_dims, config.matryoshka_weights, queries.shape[1])
