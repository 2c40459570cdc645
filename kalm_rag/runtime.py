"""Device, dtype and thread choices for inference."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from kalm_rag.errors import ConfigError

if TYPE_CHECKING:
    import torch

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}  # fmt: skip


#: "1" makes dtype="auto" treat the CPU as bf16-capable, "0" as not (tests use it to run the
#: auto path as a bf16 CPU would on any machine; users to keep float32 on a bf16 CPU).
CPU_BF16_ENV = "KALM_RAG_CPU_BF16"


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-bf16 or AVX512-bf16, where bf16 matmuls beat fp32
    (``KALM_RAG_CPU_BF16=1`` / ``0`` overrides the detection)."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ConfigError(f"{CPU_BF16_ENV} must be 0 or 1, got {forced!r}")
    return _cpuinfo_has_bf16()


@functools.cache
def cpuinfo_field(name: str) -> str:
    """The first ``name : value`` of /proc/cpuinfo (e.g. "flags", "model name"); "" if absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def _cpuinfo_has_bf16() -> bool:
    return bool(set(cpuinfo_field("flags").split()) & {"amx_bf16", "avx512_bf16"})


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def pick_device(device: str | None) -> torch.device:
    import torch

    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available")
    return chosen


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto": bf16 on a GPU or a CPU with AMX/AVX512-bf16, float32 otherwise."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
            return torch.bfloat16
        return torch.float32
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ConfigError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    if name == "float16" and device.type == "cpu":
        raise ConfigError("float16 is slow and lossy on CPU; use 'bfloat16' or 'float32'")
    result: torch.dtype = getattr(torch, name)
    return result


def configure_threads(num_threads: int | None) -> None:
    """Use the cores this process may run on; more threads than cores only contend."""
    import torch

    if num_threads is not None:
        if num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
        torch.set_num_threads(num_threads)
        return
    cores = available_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
