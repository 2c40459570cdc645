"""Public surface of kalm_rag.index: names, lazy engine imports, missing-extra errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kalm_rag
import kalm_rag.index as index_pkg
from kalm_rag.errors import MissingDependencyError


def test_exports_are_pinned() -> None:
    assert index_pkg.__all__ == [
        "BM25Index",
        "BruteForceIndex",
        "Field",
        "Filter",
        "HnswConfig",
        "HnswIndex",
        "QdrantConfig",
        "QdrantIndex",
        "SearchHit",
        "StoredItem",
        "VectorIndex",
        "load_index",
        "parse_filter",
        "reciprocal_rank_fusion",
        "tokenize",
    ]
    for name in index_pkg.__all__:
        assert getattr(index_pkg, name) is not None
    for name in ("SearchHit", "VectorIndex", "BruteForceIndex", "HnswIndex", "QdrantIndex", "load_index"):
        assert getattr(kalm_rag, name) is getattr(index_pkg, name)


def test_engines_load_only_when_an_index_is_built() -> None:
    code = (
        "import sys\n"
        "from kalm_rag.index import BruteForceIndex, HnswIndex, QdrantIndex, BM25Index, load_index\n"
        "engines = ('hnswlib', 'qdrant_edge', 'qdrant_client', 'bm25s', 'torch')\n"
        "heavy = [m for m in engines if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "HnswIndex(4)\n"
        "assert 'hnswlib' in sys.modules and 'qdrant_client' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_engine_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hnswlib", None)  # as if the package were not installed
    with pytest.raises(MissingDependencyError, match=r"kalm-rag\[index\]"):
        index_pkg.HnswIndex(4)
