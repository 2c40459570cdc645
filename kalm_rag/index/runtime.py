"""How many CPU cores this process may use (cgroup/affinity aware where the OS says)."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores in this process's CPU affinity set (what a container actually grants), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)
