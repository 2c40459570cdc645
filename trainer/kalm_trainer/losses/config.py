"""The one configuration object of the KaLM training loss (see /work/shared/RECIPE.md, "Loss")."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kalm_rag.errors import ConfigError

# RECIPE.md, "Architecture": KaLM trains every Matryoshka dim at every step with these weights.
KALM_MATRYOSHKA_DIMS: tuple[int, ...] = (896, 512, 256, 128, 64)
KALM_MATRYOSHKA_WEIGHTS: tuple[float, ...] = (1.0, 0.3, 0.2, 0.1, 0.1)


@dataclass(frozen=True)
class LossConfig:
    """Settings of :func:`kalm_trainer.losses.kalm_contrastive_loss`.

    Defaults follow RECIPE.md where a value is published and are neutral where it is not:

    - ``temperature`` 0.01: the paper's InfoNCE temperature (the repository's default is 0.02).
    - ``gamma`` 0.0: focal reweighting off, i.e. plain InfoNCE (stage 1). The v2 value is not
      published; a third-party note says 0.5 for a later KaLM model, a sensible fine-tuning choice.
    - ``focal_detach`` False: the weight ``(1 - p)^gamma`` is part of the graph, as in the
      standard focal loss (Lin et al.); True treats it as a constant per-query weight.
    - ``mix_k`` 0: no online hard-negative mixing (stage 1). Unpublished for v2; ``mix_k`` > 0
      synthesises that many negatives per query from pairs of its ``mix_pool`` hardest ones.
    - ``mix_grad`` False: synthetic negatives are constants (as in MoCHi); the query still gets a
      gradient from them. True also backpropagates into the mixed passage embeddings.
    - ``matryoshka_dims`` / ``matryoshka_weights``: KaLM's 896/512/256/128/64 with 1/.3/.2/.1/.1;
      dims above the model's size are clipped to it (see ``matryoshka.resolve_matryoshka``).
      An empty tuple trains the full dimension only.
    - ``gather_across_processes`` True: when more than one process trains (torch.distributed
      initialised with world size > 1), every query is scored against the passages of all
      processes (RECIPE.md: the all-gathered batch); a single process is unaffected. False
      scores each process's slice on its own (fewer negatives per query).
    - ``distill_*``: KL(teacher || student) over each query's own candidates, added with weight
      ``distill_weight`` when teacher scores are given. The v2.5 teacher and temperatures are not
      published; 0.01 on both sides suits cosine scores from a teacher embedding model, use a
      teacher temperature of 1.0 for reranker logits.
    """

    temperature: float = 0.01
    gamma: float = 0.0
    focal_detach: bool = False
    mix_k: int = 0
    mix_pool: int = 16
    mix_grad: bool = False
    matryoshka_dims: tuple[int, ...] = KALM_MATRYOSHKA_DIMS
    matryoshka_weights: tuple[float, ...] = KALM_MATRYOSHKA_WEIGHTS
    gather_across_processes: bool = True
    distill_weight: float = 1.0
    distill_student_temperature: float = 0.01
    distill_teacher_temperature: float = 0.01

    def __post_init__(self) -> None:
        # TOML lists arrive as lists: store tuples so the config stays hashable and frozen.
        object.__setattr__(self, "matryoshka_dims", tuple(self.matryoshka_dims))
        object.__setattr__(self, "matryoshka_weights", tuple(self.matryoshka_weights))
        for name in ("temperature", "distill_student_temperature", "distill_teacher_temperature"):
            _require_positive(name, getattr(self, name))
        if not _finite(self.gamma) or self.gamma < 0:
            raise ConfigError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if not _finite(self.distill_weight) or self.distill_weight < 0:
            raise ConfigError(f"distill_weight must be a finite number >= 0, got {self.distill_weight!r}")
        if not _is_int(self.mix_k) or self.mix_k < 0:
            raise ConfigError(f"mix_k must be an integer >= 0, got {self.mix_k!r}")
        if not _is_int(self.mix_pool) or self.mix_pool < 2:
            raise ConfigError(
                f"mix_pool must be an integer >= 2 (pairs are drawn from it), got {self.mix_pool!r}"
            )
        self._check_matryoshka()

    def _check_matryoshka(self) -> None:
        dims, weights = self.matryoshka_dims, self.matryoshka_weights
        if len(dims) != len(weights):
            raise ConfigError(
                f"matryoshka_dims has {len(dims)} entries but matryoshka_weights has {len(weights)}; "
                "give one weight per dim"
            )
        if any(not _is_int(d) or d <= 0 for d in dims):
            raise ConfigError(f"matryoshka_dims must be positive integers, got {dims!r}")
        if len(set(dims)) != len(dims):
            raise ConfigError(f"matryoshka_dims must be distinct, got {dims!r}")
        if any(not _finite(w) or w <= 0 for w in weights):
            raise ConfigError(f"matryoshka_weights must be positive finite numbers, got {weights!r}")


def _require_positive(name: str, value: object) -> None:
    if not _finite(value) or value <= 0:  # type: ignore[operator]
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
