"""Find the trainer checkpoints of a stage: complete ones only, in step order.

A checkpoint folder is written in several steps (model, optimiser, RNG, trainer state last),
so a process killed while saving leaves a partial folder. ``trainer_state.json`` is the last
file the Trainer writes; a folder without it is never resumed from nor averaged.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["STAMP_NAME", "complete_checkpoints", "latest_checkpoint"]

#: identity of the stage whose checkpoints a folder holds (see ``stages._prepare_checkpoints``)
STAMP_NAME = "kalm_stage.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-<step>`` folders with a trainer state and model weights, by step."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and (child / "trainer_state.json").is_file() and _has_weights(child):
            found.append((int(match.group(1)), child))
    return [path for _step, path in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def _has_weights(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
