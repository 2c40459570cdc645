"""Model soup: uniform or weighted parameter averaging of fine-tuned checkpoints.

RECIPE.md, "Stages": stage 3 averages the parameters of fine-tuned checkpoints (LM-Cocktail
inspired); which checkpoints and weights KaLM used is not published, so both uniform and
weighted averages are supported. :func:`average_state_dicts` is the pure core;
:func:`soup_checkpoints` is the thin shell that reads safetensors folders and writes one.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kalm_rag._atomic import atomic_folder
from kalm_rag.errors import InvalidInputError

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
# Weights and trainer state in a checkpoint folder: the soup writes its own weights and is not a
# resumable training state, so none of these are copied from the first checkpoint.
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_NOT_COPIED_NAMES = {SHARD_INDEX, "trainer_state.json", "training_args.bin"}


def normalize_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Validate soup weights (positive, finite, one per checkpoint) and scale them to sum 1."""
    if count == 0:
        raise InvalidInputError("a model soup needs at least one checkpoint, got none")
    if weights is None:
        return [1.0 / count] * count
    weights = list(weights)
    if len(weights) != count:
        raise InvalidInputError(
            f"got {len(weights)} soup weights for {count} checkpoints; give one per checkpoint"
        )
    bad = [w for w in weights if not isinstance(w, int | float) or not math.isfinite(w) or w <= 0]
    if bad:
        raise InvalidInputError(f"soup weights must be positive finite numbers, got {weights}")
    total = float(sum(weights))
    return [w / total for w in weights]


def check_compatible(state_dicts: Sequence[Mapping[str, Any]], shapes: Sequence[Mapping[str, Any]]) -> None:
    """Raise InvalidInputError naming the keys or shapes where checkpoints disagree."""
    reference = set(state_dicts[0])
    for i, state in enumerate(state_dicts[1:], start=1):
        missing, extra = sorted(reference - set(state)), sorted(set(state) - reference)
        if missing or extra:
            raise InvalidInputError(
                f"checkpoint {i} does not match checkpoint 0: missing keys {missing[:10]}, unexpected keys "
                f"{extra[:10]} ({len(missing)} missing, {len(extra)} unexpected)"
            )
        wrong = [
            f"{key}: {tuple(shapes[0][key])} vs {tuple(shapes[i][key])}"
            for key in sorted(reference)
            if tuple(shapes[0][key]) != tuple(shapes[i][key])
        ]
        if wrong:
            raise InvalidInputError(f"checkpoint {i} has different shapes than checkpoint 0 for {wrong[:10]}")


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted average of floating-point tensors across checkpoints with identical keys/shapes.

    ``weights`` (default uniform) must be positive; they are normalised to sum 1. The sum is
    accumulated in float64 and cast back to the first checkpoint's dtype. Non-float tensors
    (integer buffers such as position ids) are copied from the first checkpoint. Tensors are
    read key by key, so lazy mappings (see :class:`SafetensorsFolder`) keep memory at about one
    model.
    """
    scale = normalize_weights(weights, len(state_dicts))
    check_compatible(state_dicts, [_shapes(state) for state in state_dicts])
    averaged: dict[str, torch.Tensor] = {}
    for key in state_dicts[0]:
        first = state_dicts[0][key]
        if not first.is_floating_point():
            averaged[key] = first.detach().clone()
            continue
        total = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for weight, state in zip(scale, state_dicts, strict=True):
            total += weight * state[key].detach().to(device=first.device, dtype=torch.float64)
        averaged[key] = total.to(first.dtype).contiguous()
    return averaged


def _shapes(state: Mapping[str, torch.Tensor]) -> Mapping[str, Any]:
    return state.shapes if isinstance(state, SafetensorsFolder) else {k: v.shape for k, v in state.items()}


class SafetensorsFolder(Mapping[str, torch.Tensor]):
    """Read-only, lazy view of a model folder's safetensors weights (single file or shards)."""

    def __init__(self, folder: str | Path, stack: contextlib.ExitStack) -> None:
        from safetensors import safe_open

        self.folder = Path(folder)
        index = self.folder / SHARD_INDEX
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.folder / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            found = sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []
            raise InvalidInputError(
                f"{self.folder} has no {SINGLE_FILE} or {SHARD_INDEX} (found {found[:20]}); "
                "save the checkpoint with safetensors (transformers does by default)"
            )
        self._handles = {
            name: stack.enter_context(safe_open(self.folder / name, framework="pt")) for name in files
        }
        self._file_of = {key: name for name, handle in self._handles.items() for key in handle.keys()}  # noqa: SIM118
        self.shapes = {
            key: tuple(self._handles[name].get_slice(key).get_shape()) for key, name in self._file_of.items()
        }

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor: torch.Tensor = self._handles[self._file_of[key]].get_tensor(key)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)


def soup_checkpoints(
    folders: Sequence[str | Path], output: str | Path, *, weights: Sequence[float] | None = None
) -> Path:
    """Average the weights of model folders into ``output`` (written atomically); return it.

    Every folder must hold safetensors weights with the same keys and shapes: in the folder
    itself and in any module subfolder (a sentence-transformers ``2_Dense/`` is averaged too).
    Config, tokenizer and sentence-transformers files (everything but weights and trainer state)
    are copied from the first folder; each averaged module is written as ``model.safetensors``.
    """
    from safetensors.torch import save_file

    paths = [Path(f) for f in folders]
    normalize_weights(weights, len(paths))  # fail before reading gigabytes
    modules = weight_subfolders(paths[0])
    with atomic_folder(output) as tmp:
        shutil.copytree(paths[0], tmp, ignore=_skip_weights, dirs_exist_ok=True)
        for module in modules:
            with contextlib.ExitStack() as stack:
                states = [SafetensorsFolder(path / module, stack) for path in paths]
                averaged = average_state_dicts(states, weights)
            (tmp / module).mkdir(parents=True, exist_ok=True)
            save_file(averaged, str(tmp / module / SINGLE_FILE), metadata={"format": "pt"})
            del averaged  # one module's average in memory at a time
    return Path(output)


def weight_subfolders(folder: Path) -> list[Path]:
    """Relative paths of ``folder`` and its subfolders that hold safetensors model weights."""
    if not folder.is_dir():
        raise InvalidInputError(f"checkpoint folder {folder} does not exist")
    found = [
        p.parent.relative_to(folder)
        for name in (SINGLE_FILE, SHARD_INDEX)
        for p in folder.rglob(name)
        if not any(part.startswith("checkpoint-") for part in p.relative_to(folder).parts)
    ]
    if not found:
        raise InvalidInputError(
            f"{folder} has no {SINGLE_FILE} or {SHARD_INDEX}; save the checkpoint with safetensors "
            "(transformers and sentence-transformers do by default)"
        )
    return sorted(set(found))


def _skip_weights(directory: str, names: list[str]) -> set[str]:
    # nested trainer checkpoints are not part of a model; weights are written by the soup itself
    return {
        name
        for name in names
        if name in _NOT_COPIED_NAMES or name.endswith(_NOT_COPIED_SUFFIXES) or name.startswith("checkpoint-")
    }
