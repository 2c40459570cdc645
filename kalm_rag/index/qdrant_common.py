"""What the two Qdrant paths (embedded qdrant-edge, qdrant-client) share: configuration, the
string-id -> uuid mapping, and turning Qdrant points back into SearchHits.

Ids: Qdrant accepts only unsigned ints and UUIDs, so a string id becomes ``uuid5(namespace,
id)`` (stable, no lookup table to persist or to keep in step across clients of one server)
and the string itself travels in the reserved payload key ``__kalm_id__``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import Payload, SearchHit, make_hit

ID_KEY = "__kalm_id__"
# Fixed forever: changing it would orphan every point already stored on a server.
ID_NAMESPACE = uuid.UUID("6f1c1bd0-4a5e-5b8e-9a43-6b616c6d2d72")
PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool")


@dataclass(frozen=True)
class QdrantConfig:
    """Qdrant settings for both paths; each field says which path uses it.

    ``m``, ``ef_construction``, ``full_scan_threshold_kb``: the HNSW graph (both paths; Qdrant's
    defaults are 16 / 100 / 10,000). ``ef``: search beam, raised to ``k`` when ``k`` is larger.
    ``indexing_threshold_kb`` (edge): segments holding more vector data than this get an HNSW
    graph when optimised; smaller ones are scanned exactly, which is faster at that size.
    ``auto_optimize`` (edge): after an ``add`` that brings at least that much new data, run the
    optimiser (Qdrant's server does this in the background; the embedded engine waits for it).
    ``search_threads`` (edge): search pool size, ``None`` = one per CPU.
    ``payload_indexes``: field -> "keyword" | "integer" | "float" | "bool", indexed for fast
    filters (edge and server; local mode ignores indexes). ``auto_payload_indexes``: also
    index every scalar payload field by the kind of its values, before it is written; filters
    on fields without a fitting index are answered by exact search (see qdrant_schema.py).
    ``collection``, ``batch_size``, ``timeout`` (client): collection name, points per upsert
    request, request timeout in seconds.
    """

    m: int = 16
    ef_construction: int = 100
    ef: int = 128
    full_scan_threshold_kb: int = 10_000
    indexing_threshold_kb: int = 10_000
    auto_optimize: bool = True
    search_threads: int | None = None
    payload_indexes: Mapping[str, str] = field(default_factory=dict)
    auto_payload_indexes: bool = True
    collection: str = "kalm_rag"
    batch_size: int = 256
    timeout: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "m",
            "ef_construction",
            "ef",
            "full_scan_threshold_kb",
            "indexing_threshold_kb",
            "batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"QdrantConfig.{name} must be a positive integer, got {value!r}")
        if self.search_threads is not None and self.search_threads < 1:
            raise ConfigError(
                f"QdrantConfig.search_threads must be None or >= 1, got {self.search_threads!r}"
            )
        bad = {k: v for k, v in self.payload_indexes.items() if v not in PAYLOAD_INDEX_TYPES}
        if bad:
            raise ConfigError(
                f"QdrantConfig.payload_indexes types must be one of {PAYLOAD_INDEX_TYPES}: {bad}"
            )
        if not self.collection:
            raise ConfigError("QdrantConfig.collection must be a non-empty name")
        object.__setattr__(self, "payload_indexes", dict(self.payload_indexes))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def point_id(item_id: str) -> str:
    """The Qdrant point id (a UUID string) for a user's string id."""
    return str(uuid.uuid5(ID_NAMESPACE, item_id))


def stored_payload(item_id: str, payload: Payload | None) -> Payload:
    """The payload Qdrant stores: the user's fields plus the string id."""
    return {**(payload or {}), ID_KEY: item_id}


def split_payload(raw: Mapping[str, Any] | None) -> tuple[str, Payload | None]:
    """(string id, user payload or None) from a payload Qdrant returned."""
    payload = dict(raw or {})
    item_id = payload.pop(ID_KEY, None)
    if not isinstance(item_id, str):
        raise InvalidInputError(
            "a point in the Qdrant collection has no kalm-rag id; the collection was not written by "
            "kalm-rag (use a dedicated collection name in QdrantConfig.collection)"
        )
    return item_id, payload or None


def to_hit(raw_payload: Mapping[str, Any] | None, score: float, metric: str) -> SearchHit:
    item_id, payload = split_payload(raw_payload)
    # Qdrant's Euclid score is the distance (lower is better); ours is a similarity.
    return make_hit(item_id, 0.0 - float(score) if metric == "l2" else float(score), payload)
