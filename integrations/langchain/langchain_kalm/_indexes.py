"""Building kalm_rag indexes by backend name, and the payload layout documents are stored in.

The layout is the one ``kalm_rag.Retriever`` uses (metadata keys at the top level, the text under
a reserved key), so metadata filters need no translation and a saved store opens as a Retriever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.documents import Document

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import SearchHit, StoredItem, VectorIndex
from kalm_rag.retriever import TEXT_KEY

Backend = Literal["brute", "hnsw", "qdrant"]
BACKENDS: tuple[str, ...] = ("brute", "hnsw", "qdrant")
RESERVED_PREFIX = "_kalm"


def make_index(backend: str, dim: int, *, metric: str, options: Mapping[str, Any]) -> VectorIndex:
    """A new empty index of the named backend; ``options`` go to its constructor."""
    if backend == "brute":
        from kalm_rag.index.brute import BruteForceIndex

        return BruteForceIndex(dim, metric=metric, **options)
    if backend == "hnsw":
        from kalm_rag.index.hnsw import HnswIndex

        return HnswIndex(dim, metric=metric, **options)
    if backend == "qdrant":
        from kalm_rag.index.qdrant import QdrantIndex

        return QdrantIndex(dim, metric=metric, **options)
    raise ConfigError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def to_payload(text: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(text, str):
        raise InvalidInputError(f"texts must be strings, got {type(text).__name__}")
    meta = dict(metadata or {})
    reserved = [key for key in meta if str(key).startswith(RESERVED_PREFIX)]
    if reserved:
        raise InvalidInputError(f"metadata keys starting with {RESERVED_PREFIX!r} are reserved: {reserved}")
    return {**meta, TEXT_KEY: text}


def to_document(item_id: str, payload: Mapping[str, Any] | None) -> Document:
    metadata = dict(payload or {})
    text = metadata.pop(TEXT_KEY, "")
    return Document(id=item_id, page_content=str(text), metadata=metadata)


def hit_to_document(hit: SearchHit) -> Document:
    return to_document(hit.id, hit.payload)


def stored_to_document(item: StoredItem) -> Document:
    return to_document(item.id, item.payload)
