"""Vector indexes: one ``VectorIndex`` contract, several engines (exact, hnswlib, Qdrant).

This package module stays light: every engine (numpy, hnswlib, qdrant) is imported on first use
through ``__getattr__``, so ``import kalm_rag.index`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "SearchHit": "kalm_rag.index.base",
    "StoredItem": "kalm_rag.index.base",
    "VectorIndex": "kalm_rag.index.base",
    "BruteForceIndex": "kalm_rag.index.brute",
    "HnswIndex": "kalm_rag.index.hnsw",
    "HnswConfig": "kalm_rag.index.hnsw",
    "QdrantIndex": "kalm_rag.index.qdrant",
    "QdrantConfig": "kalm_rag.index.qdrant_common",
    "BM25Index": "kalm_rag.index.bm25",
    "tokenize": "kalm_rag.index.bm25",
    "reciprocal_rank_fusion": "kalm_rag.index.fusion",
    "Field": "kalm_rag.index.filters",
    "Filter": "kalm_rag.index.filters",
    "parse_filter": "kalm_rag.index.filters",
    "load_index": "kalm_rag.index.persist",
}

__all__ = [
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

if TYPE_CHECKING:
    from kalm_rag.index.base import SearchHit, StoredItem, VectorIndex
    from kalm_rag.index.bm25 import BM25Index, tokenize
    from kalm_rag.index.brute import BruteForceIndex
    from kalm_rag.index.filters import Field, Filter, parse_filter
    from kalm_rag.index.fusion import reciprocal_rank_fusion
    from kalm_rag.index.hnsw import HnswConfig, HnswIndex
    from kalm_rag.index.persist import load_index
    from kalm_rag.index.qdrant import QdrantIndex
    from kalm_rag.index.qdrant_common import QdrantConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kalm_rag.index' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
