"""Is an exported option really faster than torch on *this* machine? Timed once, then cached.

A fixed preference order is wrong on some CPUs: on an AVX2-only EPYC, OpenVINO float32 encoded
documents at 0.92x of our torch float32 path (benchmarks/results/encode_backends.md). So
``backend="auto"`` times the option that passed the guard against the torch path it would
replace, on the guard's held-out documents (warm, best of two passes each), and keeps torch when
the option is not at least ``GuardPolicy.min_speedup`` times as fast. The measurement is stored
next to the export (``speed.json``), keyed by CPU model, thread count and both precisions, so a
later load reads it instead of timing again.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: passes timed per path (the best counts: the least disturbed by other processes)
TIMED_PASSES = 2


@dataclass(frozen=True)
class SpeedResult:
    """Seconds to encode the same documents on the exported option and on torch."""

    option_seconds: float
    torch_seconds: float
    n_documents: int

    @property
    def speedup(self) -> float:
        return self.torch_seconds / max(self.option_seconds, 1e-9)

    def describe(self, option: str, torch_dtype: str) -> str:
        return (
            f"{option} {self.speedup:.2f}x torch {torch_dtype} on {self.n_documents} held-out documents "
            f"({self.option_seconds:.2f}s vs {self.torch_seconds:.2f}s)"
        )


def best_time(encode: Callable[[], Any], passes: int = TIMED_PASSES) -> float:
    """Best wall time of ``passes`` calls after one untimed warm-up call."""
    encode()
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        encode()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_model() -> str:
    """The CPU's model name (speed results from another CPU must not be reused)."""
    from kalm_rag.runtime import cpuinfo_field

    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def speed_key(precision: str, torch_dtype: str, num_threads: int) -> str:
    return f"{precision}|torch-{torch_dtype}|{num_threads}t|{cpu_model()}"


def read_speed(folder: Path, key: str) -> SpeedResult | None:
    from kalm_rag.backends.cache import read_entry

    entry = read_entry(folder / "speed.json", key)
    try:
        return SpeedResult(**entry) if entry is not None else None
    except TypeError:  # an entry written by another version: time again
        return None


def write_speed(folder: Path, key: str, result: SpeedResult) -> None:
    """Add one measurement to the export's speed.json (replaced atomically)."""
    from kalm_rag.backends.cache import write_entry

    write_entry(folder / "speed.json", key, asdict(result))


__all__ = ["SpeedResult", "best_time", "cpu_model", "read_speed", "speed_key", "write_speed"]
