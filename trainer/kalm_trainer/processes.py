"""The process group of a run, the way the Trainer will see it (one process, or torchrun's).

accelerate keeps one shared state per process; creating it here with the same device choice as
``TrainingArguments(use_cpu=...)`` makes the data steps and the trainer agree on the ranks
(a bare ``PartialState()`` on a machine without CUDA sees one process even under torchrun).
"""

from __future__ import annotations

from typing import Any

__all__ = ["process_state"]


def process_state() -> Any:
    import torch
    from accelerate import PartialState  # type: ignore[import-untyped]

    return PartialState(cpu=not torch.cuda.is_available())
