"""Saved-index folders: manifest, dispatch by backend, refusal to clobber, damage detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kalm_rag.errors import InvalidInputError
from kalm_rag.index.bm25 import BM25Index
from kalm_rag.index.brute import BruteForceIndex
from kalm_rag.index.hnsw import HnswConfig, HnswIndex
from kalm_rag.index.persist import load_index
from kalm_rag.index.storage import MANIFEST, read_manifest


def small_index() -> BruteForceIndex:
    index = BruteForceIndex(4, metric="l2")
    index.add(["a", "b"], np.eye(2, 4, dtype=np.float32), payloads=[{"x": 1}, None])
    return index


def test_manifest_names_backend_and_data_folder(tmp_path: Path) -> None:
    small_index().save(tmp_path / "idx")
    manifest, data = read_manifest(tmp_path / "idx")
    assert manifest["backend"] == "brute" and manifest["dim"] == 4 and manifest["metric"] == "l2"
    assert manifest["count"] == 2 and manifest["format"] == "kalm-rag-index"
    assert data.parent == tmp_path / "idx" and data.name == manifest["data"]
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted([MANIFEST, manifest["data"]])


def test_resaving_keeps_exactly_one_data_folder(tmp_path: Path) -> None:
    index = small_index()
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / ".tmp-v-leftover").mkdir()  # as a killed save would leave it
    index.add(["c"], np.ones((1, 4), np.float32))
    index.save(tmp_path / "idx")
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert len(names) == 2 and MANIFEST in names
    assert len(load_index(tmp_path / "idx")) == 3


def test_load_index_dispatches_on_the_manifest(tmp_path: Path) -> None:
    hnsw = HnswIndex(4, metric="dot", config=HnswConfig(ef=33))
    hnsw.add(["a"], np.ones((1, 4), np.float32))
    hnsw.save(tmp_path / "h")
    loaded = load_index(tmp_path / "h")
    assert isinstance(loaded, HnswIndex) and loaded.config.ef == 33  # ef is not in hnswlib's file
    # search-time settings can change on load
    assert HnswIndex.load(tmp_path / "h", config=HnswConfig(ef=200)).config.ef == 200
    with pytest.raises(InvalidInputError, match="saved by backend 'hnsw', not 'brute'"):
        BruteForceIndex.load(tmp_path / "h")


def test_refuses_to_save_over_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="holds other files"):
        small_index().save(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        small_index().save(tmp_path / "file")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_damaged_or_foreign_folders_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no saved index"):
        load_index(tmp_path)
    small_index().save(tmp_path / "idx")
    manifest_file = tmp_path / "idx" / MANIFEST
    manifest = json.loads(manifest_file.read_text())

    manifest_file.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(InvalidInputError, match="newer kalm-rag"):
        load_index(tmp_path / "idx")
    manifest_file.write_text(json.dumps({**manifest, "backend": "faiss"}))
    with pytest.raises(InvalidInputError, match="unknown backend 'faiss'"):
        load_index(tmp_path / "idx")
    manifest_file.write_text(json.dumps({**manifest, "data": "v-gone"}))
    with pytest.raises(InvalidInputError, match="data folder 'v-gone' is missing"):
        load_index(tmp_path / "idx")
    manifest_file.write_text(json.dumps({**manifest, "count": 3}))
    with pytest.raises(InvalidInputError, match="damaged"):
        load_index(tmp_path / "idx")
    manifest_file.write_text("{not json")
    with pytest.raises(InvalidInputError, match="unreadable index manifest"):
        load_index(tmp_path / "idx")


def test_bm25_folders_point_to_their_own_loader(tmp_path: Path) -> None:
    index = BM25Index()
    index.add(["a"], ["hello"])
    index.save(tmp_path / "bm")
    with pytest.raises(InvalidInputError, match=r"BM25Index\.load"):
        load_index(tmp_path / "bm")
