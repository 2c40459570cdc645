"""Many threads search while one thread adds, re-upserts and deletes: no crash, and no torn
result (a hit whose id, payload and score do not belong to one consistent version of an item).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from kalm_rag.index.brute import BruteForceIndex
from kalm_rag.index.hnsw import HnswConfig, HnswIndex
from kalm_rag.index.qdrant import QdrantIndex

DIM = 16
N_IDS = 300
VERSIONS = 4
READERS = 4


def build(kind: str) -> Any:
    if kind == "brute":
        return BruteForceIndex(DIM, metric="dot")
    if kind == "hnsw":
        return HnswIndex(DIM, metric="dot", config=HnswConfig(capacity=16, num_threads=2))
    if kind == "qdrant-edge":
        return QdrantIndex(DIM, metric="dot")
    return QdrantIndex(DIM, metric="dot", location=":memory:")


@pytest.mark.parametrize("kind", ["brute", "hnsw", "qdrant-edge", "qdrant-local"])
def test_searches_during_writes_see_consistent_items(kind: str) -> None:
    rng = np.random.default_rng(0)
    # table[v, i] is the vector of item i at version v; the payload records (id, version)
    table = rng.normal(size=(VERSIONS, N_IDS, DIM)).astype(np.float32)
    queries = rng.normal(size=(8, DIM)).astype(np.float32)
    index = build(kind)
    batch = 30 if kind != "qdrant-local" else 60
    index.add(
        [f"i{j}" for j in range(batch)],
        table[0, :batch],
        payloads=[{"src": f"i{j}", "v": 0} for j in range(batch)],
    )
    done = threading.Event()
    errors: list[str] = []
    searches = [0] * READERS

    def reader(slot: int) -> None:
        try:
            while not done.is_set():
                for q, hits in zip(queries, index.search(queries, k=10), strict=True):
                    for hit in hits:
                        j, v = int(hit.id[1:]), hit.payload["v"]
                        if hit.payload["src"] != hit.id:
                            errors.append(f"payload of {hit.payload['src']} returned for {hit.id}")
                        expected = float(q @ table[v, j])
                        if abs(hit.score - expected) > 1e-3 * max(1.0, abs(expected)):
                            errors.append(f"{hit.id} v{v}: score {hit.score} but vector gives {expected}")
                searches[slot] += 1
        except Exception as exc:  # a crash in a reader fails the test
            errors.append(f"reader crashed: {exc!r}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(READERS)]
    for t in threads:
        t.start()
    try:
        for version in range(VERSIONS):
            for start in range(0, N_IDS, batch):
                ids = [f"i{j}" for j in range(start, start + batch)]
                index.add(
                    ids,
                    table[version, start : start + batch],
                    payloads=[{"src": i, "v": version} for i in ids],
                )
                if start % (3 * batch) == 0:
                    index.delete(ids[:5])
                time.sleep(0.001)  # let readers in between writes
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    index.close()
    assert not errors, errors[:5]
    assert min(searches) > 0
