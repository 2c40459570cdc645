"""kalm-rag: instruction-aware multilingual embeddings, vector indexes and retrieval.

``import kalm_rag`` stays light: torch, transformers, hnswlib and qdrant load on first use.
Public names are resolved lazily through ``__getattr__``.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that busy-wait make torch 10-40x slower when the cores are shared (measured on
# 2-core machines); passive waiting costs nothing when they are not. Effective only if set
# before torch is imported, so it is set here, and never overrides a user's own setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Encoder": "kalm_rag.encoder",
    "ModelConfig": "kalm_rag.config",
    "TaskType": "kalm_rag.instructions",
    "KalmRagError": "kalm_rag.errors",
    "InvalidInputError": "kalm_rag.errors",
    "ModelNotFoundError": "kalm_rag.errors",
    "ConfigError": "kalm_rag.errors",
    "MissingDependencyError": "kalm_rag.errors",
    "SearchHit": "kalm_rag.index.base",
    "VectorIndex": "kalm_rag.index.base",
    "BruteForceIndex": "kalm_rag.index.brute",
    "HnswIndex": "kalm_rag.index.hnsw",
    "QdrantIndex": "kalm_rag.index.qdrant",
    "load_index": "kalm_rag.index.persist",
    "Retriever": "kalm_rag.retriever",
}

__all__ = [  # noqa: RUF022 - grouped by topic
    "__version__",
    "Encoder",
    "ModelConfig",
    "TaskType",
    "KalmRagError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ConfigError",
    "MissingDependencyError",
    "SearchHit",
    "VectorIndex",
    "BruteForceIndex",
    "HnswIndex",
    "QdrantIndex",
    "load_index",
    "Retriever",
]

if TYPE_CHECKING:
    from kalm_rag.config import ModelConfig
    from kalm_rag.encoder import Encoder
    from kalm_rag.errors import (
        ConfigError,
        InvalidInputError,
        KalmRagError,
        MissingDependencyError,
        ModelNotFoundError,
    )
    from kalm_rag.index.base import SearchHit, VectorIndex
    from kalm_rag.index.brute import BruteForceIndex
    from kalm_rag.index.hnsw import HnswIndex
    from kalm_rag.index.persist import load_index
    from kalm_rag.index.qdrant import QdrantIndex
    from kalm_rag.instructions import TaskType
    from kalm_rag.retriever import Retriever


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kalm_rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
