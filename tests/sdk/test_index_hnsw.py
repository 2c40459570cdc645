"""hnswlib specifics behind HnswIndex: growth, slot reuse after deletes, k beyond ef, filter
paths, and what survives a save (ef, the label map, deletions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kalm_rag.errors import ConfigError
from kalm_rag.index.brute import BruteForceIndex
from kalm_rag.index.hnsw import HnswConfig, HnswIndex


def data(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def overlap(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / max(1, len(b))


def test_grows_from_a_tiny_capacity() -> None:
    index = HnswIndex(16, config=HnswConfig(capacity=4))
    items = data(1000)
    for start in range(0, 1000, 137):
        index.add([f"d{i}" for i in range(start, min(start + 137, 1000))], items[start : start + 137])
    assert len(index) == 1000 and index._index.get_max_elements() >= 1000
    assert [index.search(items[i], k=1)[0][0].id for i in (0, 500, 999)] == ["d0", "d500", "d999"]


def test_deleted_slots_are_reused_by_new_items() -> None:
    index = HnswIndex(16, config=HnswConfig(capacity=100))
    items = data(150)
    index.add([f"d{i}" for i in range(100)], items[:100])
    index.delete([f"d{i}" for i in range(50)])
    index.add([f"n{i}" for i in range(50)], items[100:150])
    assert index._index.get_current_count() == 100 and index._index.get_max_elements() == 100
    assert len(index) == 100
    hits = index.search(items[100:150], k=1)
    assert [h[0].id for h in hits] == [f"n{i}" for i in range(50)]
    assert index.get(["d0"]) == [None]


def test_k_beyond_ef_still_returns_k_good_neighbours() -> None:
    items, queries = data(3000), data(20, seed=1)
    ids = [f"d{i}" for i in range(3000)]
    index = HnswIndex(16, metric="l2", config=HnswConfig(ef=10))
    index.add(ids, items)
    oracle = BruteForceIndex(16, metric="l2")
    oracle.add(ids, items)
    found, truth = index.search(queries, k=200), oracle.search(queries, k=200)
    assert all(len(row) == 200 for row in found)
    assert (
        np.mean([overlap([h.id for h in f], [h.id for h in t]) for f, t in zip(found, truth, strict=True)])
        > 0.95
    )


def test_filter_paths_exact_graph_and_fallback() -> None:
    items, queries = data(3000), data(10, seed=2)
    ids = [f"d{i}" for i in range(3000)]
    payloads = [{"bucket": i % 3, "rare": i == 1234} for i in range(3000)]
    index = HnswIndex(16, config=HnswConfig(exact_filter_limit=500))
    index.add(ids, items, payloads=payloads)
    oracle = BruteForceIndex(16)
    oracle.add(ids, items, payloads=payloads)
    for spec in ({"bucket": 1}, {"rare": True}, {"bucket": {"in": [0, 2]}}):  # graph, exact, graph
        found, truth = index.search(queries, k=10, filter=spec), oracle.search(queries, k=10, filter=spec)
        for f, t in zip(found, truth, strict=True):
            assert all(payloads[int(h.id[1:])] == h.payload for h in f)
            assert overlap([h.id for h in f], [h.id for h in t]) >= 0.8
    assert [h.id for h in index.search(queries[0], k=5, filter={"rare": True})[0]] == ["d1234"]


def test_save_keeps_ef_labels_and_deletions(tmp_path: Path) -> None:
    items = data(200)
    index = HnswIndex(16, config=HnswConfig(ef=77, num_threads=1))
    index.add([f"d{i}" for i in range(200)], items, payloads=[{"i": i} for i in range(200)])
    index.delete(["d5", "d6"])
    index.save(tmp_path / "h")
    loaded = HnswIndex.load(tmp_path / "h")
    assert loaded.config.ef == 77 and loaded._index.ef == 77 and loaded.config.threads == 1
    assert len(loaded) == 198 and loaded.get(["d5"]) == [None]
    assert "d5" not in {h.id for h in loaded.search(items[5], k=198)[0]}
    loaded.add(["new"], items[5:6])  # a fresh label, never one of the saved ones
    (d7,) = loaded.get(["d7"])
    assert loaded.search(items[5], k=1)[0][0].id == "new" and d7 is not None and d7.payload == {"i": 7}
    assert len(loaded) == 199


@pytest.mark.parametrize("field", ["m", "ef", "capacity", "exact_filter_limit"])
def test_config_is_validated(field: str) -> None:
    with pytest.raises(ConfigError, match=f"HnswConfig.{field} must be a positive integer"):
        HnswConfig(**{field: 0})
    with pytest.raises(ConfigError, match="num_threads"):
        HnswConfig(num_threads=0)
