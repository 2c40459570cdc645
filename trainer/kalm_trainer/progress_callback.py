"""Training progress: one log line per logging step with step, loss, speed and ETA."""

from __future__ import annotations

import logging
import time
from typing import Any

from transformers import TrainerCallback

from kalm_trainer.progress import format_seconds

__all__ = ["StepProgressCallback"]

logger = logging.getLogger("kalm_trainer")


class StepProgressCallback(TrainerCallback):  # type: ignore[misc]
    """A ``TrainerCallback``: at every logging step, one line with step, loss, speed and ETA."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start, self.first_step = time.monotonic(), state.global_step  # resumed runs start late

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self.start is None or not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        steps = max(state.global_step - self.first_step, 1)
        elapsed = time.monotonic() - self.start
        per_step = elapsed / steps
        left = max(state.max_steps - state.global_step, 0) * per_step
        logger.info(
            "train: step %d/%d (%.0f%%), loss %.4f, %.2f s/step, elapsed %s, ETA %s",
            state.global_step,
            state.max_steps,
            100 * state.global_step / max(state.max_steps, 1),
            float(logs["loss"]),
            per_step,
            format_seconds(elapsed),
            format_seconds(left),
        )
