"""``load_index(path)``: open any saved index, whichever backend wrote it.

The folder's ``index.json`` manifest names the backend; this module imports only that
backend (so loading an exact index never imports hnswlib or qdrant).
"""

from __future__ import annotations

import importlib
from typing import Any

from kalm_rag.errors import InvalidInputError
from kalm_rag.index.base import PathType, VectorIndex
from kalm_rag.index.storage import read_manifest

# backend name in the manifest -> (module, class)
BACKENDS: dict[str, tuple[str, str]] = {
    "brute": ("kalm_rag.index.brute", "BruteForceIndex"),
    "hnsw": ("kalm_rag.index.hnsw", "HnswIndex"),
    "qdrant": ("kalm_rag.index.qdrant", "QdrantIndex"),
}


def load_index(path: PathType, **options: Any) -> VectorIndex:
    """Load the index saved at ``path``; ``options`` go to that backend's ``load``
    (e.g. ``config=`` for any backend, ``url=`` or ``shard_dir=`` for Qdrant)."""
    manifest, _ = read_manifest(path)
    backend = manifest.get("backend")
    if backend not in BACKENDS:
        raise InvalidInputError(
            f"index at {path} has unknown backend {backend!r}; known: {', '.join(BACKENDS)}"
            + (" (a BM25 index: use kalm_rag.index.bm25.BM25Index.load)" if backend == "bm25" else "")
        )
    module, name = BACKENDS[backend]
    cls = getattr(importlib.import_module(module), name)
    index: VectorIndex = cls.load(path, **options)
    return index
