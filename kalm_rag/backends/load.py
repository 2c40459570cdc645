"""Glue between ``Encoder.from_pretrained`` / ``save_pretrained`` and the backends."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kalm_rag.backends import check_backend
from kalm_rag.backends.guard import GuardPolicy
from kalm_rag.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from kalm_rag.encoder import Encoder

log = logging.getLogger("kalm_rag.backends")
_PRECISIONS = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "int8": "int8", "qint8": "int8"}  # fmt: skip
#: sentence-transformers' subfolder per backend
SUBFOLDER = {"openvino": "openvino", "onnx": "onnx"}


def requested_precision(dtype: str | torch.dtype | None) -> str | None:
    """None for "auto"; "float32", "bfloat16" or "int8"; other dtypes (float16) are torch-only."""
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        return None
    name = str(dtype).lower().removeprefix("torch.")
    return _PRECISIONS.get(name, f"torch-only:{name}")


def plan(backend: str | None, dtype: str | torch.dtype | None, device: torch.device) -> tuple[str, bool]:
    """The validated backend name, and whether the torch model should load in float32 for an export."""
    name = check_backend(backend)
    precision = requested_precision(dtype)
    if device.type != "cpu":
        if name in ("openvino", "onnx") or precision == "int8":
            raise ConfigError(f"backend {name!r} / dtype {dtype!r} run on CPU only; the GPU path is torch")
        return "torch", False
    if precision is not None and precision.startswith("torch-only:"):
        if name in ("openvino", "onnx"):
            raise ConfigError(f"backend {name!r} runs float32, bfloat16 or int8, not {dtype!r}")
        return "torch", False
    if name == "torch":
        if precision == "int8":
            raise ConfigError(
                "dtype='int8' needs an exported backend: use backend='auto', 'openvino' or 'onnx'"
            )
        return "torch", False
    return name, True


def attach(
    encoder: Encoder,
    *,
    backend: str,
    dtype: str | torch.dtype | None,
    num_threads: int | None,
    calibration_texts: Sequence[str] | None,
    guard: GuardPolicy | None,
) -> None:
    """Pick the backend for a float32-loaded CPU encoder; fall back to torch in the asked dtype."""
    from kalm_rag.backends.select import choose
    from kalm_rag.runtime import available_cores, pick_dtype

    precision = requested_precision(dtype)
    threads = num_threads or available_cores()
    choice = choose(
        encoder, backend=backend, precision=precision, num_threads=threads,
        calibration_texts=calibration_texts, policy=guard,
    )  # fmt: skip
    if choice.runner is None:
        # choice.precision: the guarded torch dtype of an auto dtype ("" when nothing was guarded)
        torch_dtype = pick_dtype(choice.precision or (None if precision == "int8" else dtype), encoder.device)
        encoder.model.to(torch_dtype)
        choice.precision = str(torch_dtype).removeprefix("torch.")
    encoder.runner = choice.runner
    encoder.backend_choice = choice
    log.info("kalm_rag: backend=%s -> %s (%s)", backend, choice.describe(), choice.reason)


def write_subfolder(encoder: Encoder, folder: Path) -> None:
    """Copy the exported files into ``folder/openvino`` or ``folder/onnx`` (sentence-transformers'
    layout); the float32 export always, the int8 one too when the encoder runs int8."""
    choice = getattr(encoder, "backend_choice", None)
    if choice is None or choice.runner is None or choice.export is None:
        return
    target = folder / SUBFOLDER[choice.backend]
    target.mkdir(exist_ok=True)
    sources = [choice.export]
    if choice.precision == "int8":
        sources.insert(0, choice.export.with_name(f"{choice.backend}-float32"))
    for source in sources:
        for path in source.iterdir():
            if path.is_file() and path.suffix in (".xml", ".bin", ".onnx", ".onnx_data", ".data"):
                shutil.copy2(path, target / path.name)
    summary: dict[str, Any] = {"backend": choice.backend, "precision": choice.precision}
    if choice.guard is not None:
        summary["guard"] = choice.guard.to_dict()
    import json

    (target / "kalm_rag_export.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
