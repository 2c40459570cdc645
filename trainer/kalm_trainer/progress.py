"""Progress of long steps (filtering, mining, training) as periodic log lines with an ETA, so a
user sees that a run is alive and how long is left (also in log files, where bars garble).
Training's per-step lines come from ``progress_callback.StepProgressCallback``."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["ProgressLog", "format_seconds", "show_encoder_progress"]

logger = logging.getLogger("kalm_trainer")

#: a text list at least this long gets the SDK encoder's own progress bar too
LARGE_ENCODE = 2000


def format_seconds(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLog:
    """``what: done/total unit (pct), elapsed, ETA`` every ``every_s`` seconds and at the end."""

    def __init__(self, what: str, total: int, *, unit: str = "examples", every_s: float = 10.0) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.done = 0
        self.start = self._last = time.monotonic()

    def update(self, count: int, note: str = "") -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last < self.every_s and self.done < self.total:
            return
        self._last = now
        elapsed = now - self.start
        share = self.done / self.total if self.total else 1.0
        eta = elapsed / share - elapsed if share > 0 else float("nan")
        logger.info(
            "%s: %d/%d %s (%.0f%%)%s, elapsed %s, ETA %s",
            self.what,
            self.done,
            self.total,
            self.unit,
            100 * share,
            f" [{note}]" if note else "",
            format_seconds(elapsed),
            format_seconds(eta) if eta == eta else "?",
        )


def show_encoder_progress(encoder: Any, count: int) -> dict[str, Any]:
    """Keyword arguments that turn on the SDK encoder's progress bar for long text lists."""
    from kalm_rag.encoder import Encoder

    inner = getattr(encoder, "inner", encoder)  # wrappers (a sharding encoder) pass kwargs on
    return {"show_progress": True} if isinstance(inner, Encoder) and count >= LARGE_ENCODE else {}
