"""Waiting for another process's files without a collective (no NCCL/gloo timeout applies).

A barrier (``main_process_first``) makes the waiting ranks sit in a collective that times out
after 30 minutes by default; filtering, mining or indexing millions of examples takes longer.
Polling the file system has no such limit, and a failure marker written by the working process
stops the waiting ones with its message instead of leaving them hanging.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from kalm_rag.errors import ConfigError

__all__ = ["FAILED_SUFFIX", "failure_marker", "wait_until"]

logger = logging.getLogger("kalm_trainer")

FAILED_SUFFIX = ".failed"


def _process_started() -> float:
    """Wall time this process started (a failure marker older than that is from another run)."""
    try:
        return os.stat(f"/proc/{os.getpid()}").st_ctime - 5.0
    except OSError:
        return _IMPORTED - 5.0


_IMPORTED = time.time()


def failure_marker(folder: Path) -> Path:
    """Where the main process records that the work for ``folder`` failed."""
    return folder.with_name(folder.name + FAILED_SUFFIX)


def wait_until(
    ready: Callable[[], bool],
    what: str,
    *,
    timeout_s: float = 0.0,
    poll_s: float = 1.0,
    failed: Path | None = None,
) -> None:
    """Poll ``ready`` until it is true; ``timeout_s`` 0 waits as long as it takes. Raises
    ConfigError when ``failed`` appears (its text is the main process's error) or on timeout."""
    started = time.monotonic()
    last_log = started
    while not ready():
        if failed is not None and failed.is_file() and failed.stat().st_mtime >= _process_started():
            raise ConfigError(f"waiting for {what}: the main process failed: {failed.read_text('utf-8')}")
        now = time.monotonic()
        if timeout_s and now - started > timeout_s:
            raise ConfigError(f"gave up waiting for {what} after {timeout_s:.0f} s")
        if now - last_log > 60:
            logger.info("still waiting for %s (%.0f s)", what, now - started)
            last_log = now
        time.sleep(poll_s)
