"""Crash safety: a process killed with SIGKILL in the middle of ``save`` leaves the previously
saved index loadable with all its data (saves are temp folder + fsync + rename)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kalm_rag.index.persist import load_index

REPO = Path(__file__).resolve().parents[2]

# The child saves a small index A, then starts saving a much larger index B to the same folder.
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from kalm_rag.index.brute import BruteForceIndex
    from kalm_rag.index.hnsw import HnswIndex, HnswConfig
    from kalm_rag.index.qdrant import QdrantConfig, QdrantIndex

    kind, path, big = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def make(n, seed, dim, payloads):
        if kind == "brute":
            index = BruteForceIndex(dim, metric="dot")
        elif kind == "hnsw":
            index = HnswIndex(dim, metric="dot", config=HnswConfig(m=4, ef_construction=8))
        else:
            index = QdrantIndex(dim, metric="dot", config=QdrantConfig(auto_optimize=False))
        vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
        extra = [{"seed": seed, "i": i} for i in range(n)] if payloads else None
        index.add([f"{seed}-{i}" for i in range(n)], vectors, payloads=extra)
        return index

    make(50, 1, 32, True).save(path)
    index = make(big, 2, 512, False)  # wide vectors: many bytes to write, little to build
    print("saving-B", flush=True)
    index.save(path)
    print("saved-B", flush=True)
    """
)

SIZES = {"brute": 20_000, "hnsw": 10_000, "qdrant-edge": 10_000}


def _in_progress(path: Path) -> bool:
    return any(p.name.startswith(".tmp-") for p in path.iterdir())


@pytest.mark.parametrize(
    "kind",
    [
        "brute",
        pytest.param("hnsw", marks=pytest.mark.slow),
        pytest.param("qdrant-edge", marks=pytest.mark.slow),
    ],
)
def test_kill_during_save_keeps_the_previous_index(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(path), str(SIZES[kind])],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "saving-B"
        deadline = time.monotonic() + 120
        while not _in_progress(path):  # the new data folder is being written
            assert time.monotonic() < deadline and child.poll() is None, "save finished before the kill"
            time.sleep(0.0005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert _in_progress(path), "the kill should have interrupted the save"

    index = load_index(path)
    try:
        assert len(index) == 50
        items: list[Any] = index.get([f"1-{i}" for i in range(50)])
        assert all(item is not None and item.payload == {"seed": 1, "i": i} for i, item in enumerate(items))
        expected = np.random.default_rng(1).normal(size=(50, 32)).astype(np.float32)
        np.testing.assert_allclose(np.stack([item.vector for item in items]), expected, rtol=1e-6)
        assert index.search(expected[7], k=1)[0][0].id == "1-7"
        index.save(path)  # the next save succeeds and clears the half-written folder
        assert not _in_progress(path)
    finally:
        index.close()
    reloaded = load_index(path)
    assert len(reloaded) == 50
    reloaded.close()
