"""Qdrant specifics beyond the shared contract: the embedded engine really builds HNSW graphs,
working folders persist, the client path stores uuid5 ids, and loading picks its target."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.brute import BruteForceIndex
from kalm_rag.index.qdrant import QdrantConfig, QdrantIndex
from kalm_rag.index.qdrant_common import ID_NAMESPACE, point_id


def data(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_embedded_engine_builds_hnsw_and_searches_it() -> None:
    items, queries = data(4000), data(50, seed=1)
    ids = [f"d{i}" for i in range(4000)]
    cfg = QdrantConfig(indexing_threshold_kb=100, auto_optimize=False)
    with QdrantIndex(32, config=cfg) as index:
        index.add(ids, items)
        assert index.info()["indexed_vectors"] == 0  # appendable segment, scanned exactly
        assert index.optimize() is True
        info = index.info()
        assert info["indexed_vectors"] == info["points"] == 4000
        oracle = BruteForceIndex(32)
        oracle.add(ids, items)
        truth = [[h.id for h in r] for r in oracle.search(queries, k=10)]
        found = [[h.id for h in r] for r in index.search(queries, k=10)]
        assert recall(found, truth) >= 0.9
        # k beyond ef and beyond the filtered count still work on the graph
        assert len(index.search(queries[0], k=300)[0]) == 300


def test_auto_optimize_indexes_after_large_adds() -> None:
    with QdrantIndex(32, config=QdrantConfig(indexing_threshold_kb=100)) as index:
        index.add([f"d{i}" for i in range(2000)], data(2000))  # 250 KB of vectors
        assert index.info()["indexed_vectors"] == 2000


def test_payload_indexes_and_filters(tmp_path: Path) -> None:
    cfg = QdrantConfig(payload_indexes={"lang": "keyword", "year": "integer", "score": "float", "ok": "bool"})
    with QdrantIndex(8, config=cfg, shard_dir=tmp_path / "shard") as index:
        payloads = [
            {"lang": "en" if i % 2 else "de", "year": 2000 + i, "score": i / 10, "ok": i % 3 == 0}
            for i in range(30)
        ]
        index.add([f"d{i}" for i in range(30)], data(30, dim=8), payloads=payloads)
        hits = index.search(
            data(1, dim=8, seed=3), k=30, filter={"lang": "en", "year": {"lt": 2010}, "ok": True}
        )[0]
        assert {h.id for h in hits} == {"d3", "d9"}


def test_working_folders_persist_across_reopen(tmp_path: Path) -> None:
    items = data(10, dim=8)
    with QdrantIndex(8, shard_dir=tmp_path / "edge") as index:
        index.add([f"d{i}" for i in range(10)], items)
    with QdrantIndex(8, path=tmp_path / "local") as index:
        index.add([f"d{i}" for i in range(10)], items)
    with (
        QdrantIndex(8, shard_dir=tmp_path / "edge") as edge,
        QdrantIndex(8, path=tmp_path / "local") as local,
    ):
        assert len(edge) == len(local) == 10
        assert edge.search(items[4], k=1)[0][0].id == local.search(items[4], k=1)[0][0].id == "d4"


def test_client_path_stores_uuid5_ids_with_the_string_id(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    with QdrantIndex(4, path=tmp_path / "q", config=QdrantConfig(collection="docs")) as index:
        index.add(["manpage:ls(1)"], np.ones((1, 4), np.float32), payloads=[{"lang": "en"}])
    expected = uuid.uuid5(ID_NAMESPACE, "manpage:ls(1)")
    assert point_id("manpage:ls(1)") == str(expected)
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        (record,) = client.retrieve("docs", ids=[str(expected)], with_payload=True)
        assert record.payload == {"lang": "en", "__kalm_id__": "manpage:ls(1)"}
    finally:
        client.close()


def test_foreign_or_mismatched_collections_are_refused(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    client.create_collection(
        "theirs", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
    )
    client.upsert("theirs", [models.PointStruct(id=1, vector=[1.0, 0, 0, 0], payload={"a": 1})])
    client.close()
    with pytest.raises(ConfigError, match="holds 4-d"):
        QdrantIndex(8, path=tmp_path / "q", config=QdrantConfig(collection="theirs"))
    theirs = QdrantConfig(collection="theirs")
    with (
        QdrantIndex(4, metric="dot", path=tmp_path / "q", config=theirs) as index,
        pytest.raises(InvalidInputError, match="not written by kalm-rag"),
    ):
        index.search(np.ones(4), k=1)


def test_loading_targets(tmp_path: Path) -> None:
    items = data(20, dim=8)
    ids = [f"d{i}" for i in range(20)]
    with QdrantIndex(8) as edge:
        edge.add(ids, items)
        edge.save(tmp_path / "edge")
    with pytest.raises(ConfigError, match="loads only as embedded"):
        QdrantIndex.load(tmp_path / "edge", location=":memory:")
    with QdrantIndex.load(tmp_path / "edge") as copy:
        copy.add(["extra"], items[:1])
        assert len(copy) == 21
    with QdrantIndex.load(tmp_path / "edge") as again:  # the saved folder was not touched
        assert len(again) == 20 and again.mode == "edge"

    with QdrantIndex(8, location=":memory:") as local:
        local.add(ids, items)
        local.save(tmp_path / "local")
    with QdrantIndex.load(tmp_path / "local", local_path=tmp_path / "restored") as restored:
        assert restored.mode == "local" and len(restored) == 20
    with pytest.raises(ConfigError, match="already holds points"):
        QdrantIndex.load(tmp_path / "local", local_path=tmp_path / "restored")
