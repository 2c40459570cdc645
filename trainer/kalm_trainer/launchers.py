"""Which launcher a run is under, and the combinations of features the trainer refuses.

GradCache (``gradcache_chunk`` > 0) backpropagates one step in several passes: first the loss
into the detached embeddings, then each chunk's re-embedding with the cached gradients. Under
DDP and FSDP the trainer holds gradient synchronisation back until the last chunk
(``no_sync``), so one optimiser step sees the whole batch's gradients. DeepSpeed's engine owns
the step instead: ``accelerator.backward`` runs ``engine.backward`` and then ``engine.step``, so
the parameters would be updated after the first pass (which produces no parameter gradients)
and the chunk replay would write gradients that the next step mixes with the next batch's.
That combination would train silently wrong, so it is refused before anything loads.
"""

from __future__ import annotations

import os

from kalm_rag.errors import ConfigError

__all__ = ["check_gradcache_launcher", "deepspeed_requested", "launcher_world_size"]

_TRUE = ("1", "true", "yes")


def deepspeed_requested() -> bool:
    """True when ``accelerate launch`` was given a DeepSpeed config (it sets this variable for
    every process) - known before the Trainer or the model exist."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").strip().lower() in _TRUE


def launcher_world_size() -> int:
    """How many training processes the launcher started (torchrun and accelerate set it)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def check_gradcache_launcher(gradcache_chunk: int, *, deepspeed: bool | None = None, where: str = "") -> None:
    """Raise ConfigError for GradCache under DeepSpeed (see the module docstring)."""
    if gradcache_chunk <= 0:
        return
    if deepspeed is None:
        deepspeed = deepspeed_requested()
    if deepspeed:
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}gradcache_chunk = {gradcache_chunk} (GradCache) cannot run under DeepSpeed: its "
            "engine steps the optimiser inside every backward call, before GradCache's chunk replay "
            "has produced the gradients. Launch this stage with torchrun (DDP) or FSDP "
            "(launch/fsdp.yaml), or set gradcache_chunk = 0 (with gradient_checkpointing = true "
            "and a batch that fits)"
        )
