"""KaLM-Embedding training losses. Each takes embeddings or scores, never a model.

The composed recipe loss is :func:`kalm_contrastive_loss` configured by :class:`LossConfig`;
the pieces (scores, InfoNCE/focal, false-negative masks, hard-negative mixing, Matryoshka,
distillation, cross-process gather) are importable on their own.
"""

from kalm_trainer.losses.config import KALM_MATRYOSHKA_DIMS, KALM_MATRYOSHKA_WEIGHTS, LossConfig
from kalm_trainer.losses.contrastive import focal_infonce_loss, focal_weights, infonce_loss, positive_log_prob
from kalm_trainer.losses.distill import distillation_kl
from kalm_trainer.losses.distributed import gather_with_local_grad, is_distributed, world_size
from kalm_trainer.losses.kalm import kalm_contrastive_loss
from kalm_trainer.losses.masks import UNLABELLED, same_label_mask, split_labels
from kalm_trainer.losses.matryoshka import matryoshka_sum, resolve_matryoshka
from kalm_trainer.losses.mixing import (
    MixedNegatives,
    mix_hard_negatives,
    mixed_negative_logits,
    sample_beta22,
)
from kalm_trainer.losses.similarity import (
    candidate_passages,
    group_scores,
    in_batch_logits,
    truncate_normalize,
)

__all__ = [
    "KALM_MATRYOSHKA_DIMS",
    "KALM_MATRYOSHKA_WEIGHTS",
    "UNLABELLED",
    "LossConfig",
    "MixedNegatives",
    "candidate_passages",
    "distillation_kl",
    "focal_infonce_loss",
    "focal_weights",
    "gather_with_local_grad",
    "group_scores",
    "in_batch_logits",
    "infonce_loss",
    "is_distributed",
    "kalm_contrastive_loss",
    "matryoshka_sum",
    "mix_hard_negatives",
    "mixed_negative_logits",
    "positive_log_prob",
    "resolve_matryoshka",
    "same_label_mask",
    "sample_beta22",
    "split_labels",
    "truncate_normalize",
    "world_size",
]
