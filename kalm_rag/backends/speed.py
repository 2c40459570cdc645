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

import functools
import json
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


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (speed results from another CPU must not be reused)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speed_key(precision: str, torch_dtype: str, num_threads: int) -> str:
    return f"{precision}|torch-{torch_dtype}|{num_threads}t|{cpu_model()}"


def read_speed(folder: Path, key: str) -> SpeedResult | None:
    try:
        entry = json.loads((folder / "speed.json").read_text(encoding="utf-8")).get(key)
        return SpeedResult(**entry) if isinstance(entry, dict) else None
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return None


def write_speed(folder: Path, key: str, result: SpeedResult) -> None:
    """Add one measurement to the export's speed.json (read-modify-write, replaced atomically)."""
    from kalm_rag._atomic import atomic_file

    path = folder / "speed.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        data = {}
    data[key] = asdict(result)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


__all__ = ["SpeedResult", "best_time", "cpu_model", "read_speed", "speed_key", "write_speed"]
