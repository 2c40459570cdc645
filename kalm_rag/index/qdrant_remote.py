"""The qdrant-client path of QdrantIndex: a Qdrant server or cluster (``url=``), or
qdrant-client's local mode (``location=":memory:"`` / ``path=``), which runs the same client
calls against a pure-Python exact engine (fine for tests, not an ANN engine).

Saving exports every point (vector, payload, id) into the index folder; loading upserts them
into the target collection, so an index saved from a server can be restored anywhere.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import ConfigError, InvalidInputError, require
from kalm_rag.index.base import Payload, SearchHit, StoredItem
from kalm_rag.index.filters import Filter
from kalm_rag.index.qdrant_common import QdrantConfig, point_id, split_payload, stored_payload, to_hit
from kalm_rag.index.qdrant_filters import to_client_filter
from kalm_rag.index.qdrant_schema import PayloadSchema

_SCROLL_PAGE = 1024


def _models() -> Any:
    require("qdrant_client", "index")
    from qdrant_client import models

    return models


class ClientEngine:
    def __init__(
        self,
        dim: int,
        metric: str,
        config: QdrantConfig,
        *,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        path: str | None = None,
    ) -> None:
        require("qdrant_client", "index")
        from qdrant_client import QdrantClient

        self._dim, self._metric, self._config = dim, metric, config
        self.url = url
        self.mode = "remote" if url else "local"
        if url:
            self._client = QdrantClient(url=url, api_key=api_key, timeout=config.timeout)
        elif path is not None:
            # Local mode keeps a SQLite connection; our own lock serialises its writers.
            self._client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
        else:
            self._client = QdrantClient(location=location or ":memory:")
        self._collection = config.collection
        self._ensure_collection()

    def _distance(self) -> Any:
        models = _models()
        return models.Distance.EUCLID if self._metric == "l2" else models.Distance.DOT

    def _ensure_collection(self) -> None:
        models, cfg = _models(), self._config
        existing: dict[str, str] = {}
        if self._client.collection_exists(self._collection):
            info = self._client.get_collection(self._collection)
            params = info.config.params.vectors
            existing = {
                name: str(getattr(s.data_type, "value", s.data_type))
                for name, s in info.payload_schema.items()
            }
            size, distance = getattr(params, "size", None), getattr(params, "distance", None)
            allowed = {self._distance()} | ({models.Distance.COSINE} if self._metric == "cosine" else set())
            if size != self._dim or distance not in allowed:
                raise ConfigError(
                    f"Qdrant collection {self._collection!r} holds {size}-d {distance} vectors, not "
                    f"{self._dim}-d {self._metric}; choose another QdrantConfig.collection"
                )
        else:
            self._client.create_collection(
                self._collection,
                vectors_config=models.VectorParams(size=self._dim, distance=self._distance()),
                hnsw_config=models.HnswConfigDiff(
                    m=cfg.m, ef_construct=cfg.ef_construction, full_scan_threshold=cfg.full_scan_threshold_kb
                ),
            )
        # Payload indexes: declared ones, and one per scalar field (qdrant_schema.py). Local
        # mode accepts them without effect (it is exact), which keeps this path tested.
        self._schema = PayloadSchema.open(
            existing, cfg.payload_indexes, auto=cfg.auto_payload_indexes, empty=self.count() == 0, folder=None
        )
        self._apply_schema(*self._schema.initial_changes())

    def _apply_schema(self, create: dict[str, str], drop: list[str]) -> None:
        if not create and not drop:
            return
        models = _models()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for field_name in drop:
                self._client.delete_payload_index(self._collection, field_name, wait=True)
            for field_name, kind in create.items():
                schema = getattr(models.PayloadSchemaType, kind.upper())
                self._client.create_payload_index(
                    self._collection, field_name, field_schema=schema, wait=True
                )

    def upsert(
        self, ids: list[str], vectors: npt.NDArray[np.float32], payloads: list[Payload | None]
    ) -> None:
        models = _models()
        rows = vectors.tolist()
        step = self._config.batch_size
        self._apply_schema(*self._schema.plan_upsert(payloads))
        for start in range(0, len(ids), step):
            points = [
                models.PointStruct(
                    id=point_id(ids[i]), vector=rows[i], payload=stored_payload(ids[i], payloads[i])
                )
                for i in range(start, min(start + step, len(ids)))
            ]
            self._client.upsert(self._collection, points=points, wait=True)

    def optimize(self) -> bool:
        return False  # a server optimises in the background; local mode has nothing to build

    def search(self, queries: npt.NDArray[np.float32], k: int, node: Filter | None) -> list[list[SearchHit]]:
        models = _models()
        native = to_client_filter(node) if node is not None else None
        # Local mode is exact and warns about search params, so only a server gets them. A
        # condition without a fitting payload index would cut the graph's links: search exactly.
        exact = node is not None and not self._schema.covers(node)
        params = (
            models.SearchParams(hnsw_ef=max(self._config.ef, k), exact=exact)
            if self.mode == "remote"
            else None
        )
        requests = [
            models.QueryRequest(query=row, limit=k, filter=native, params=params, with_payload=True)
            for row in queries.tolist()
        ]
        responses = self._client.query_batch_points(self._collection, requests=requests)
        return [[to_hit(p.payload, p.score, self._metric) for p in r.points] for r in responses]

    def get(self, ids: list[str]) -> list[StoredItem | None]:
        records = self._client.retrieve(
            self._collection,
            ids=[point_id(i) for i in dict.fromkeys(ids)],
            with_payload=True,
            with_vectors=True,
        )
        found: dict[str, StoredItem] = {}
        for record in records:
            item_id, payload = split_payload(record.payload)
            found[item_id] = StoredItem(item_id, np.asarray(record.vector, np.float32), payload)
        return [found.get(i) for i in ids]

    def delete(self, ids: list[str]) -> int:
        models = _models()
        pids = [point_id(i) for i in dict.fromkeys(ids)]
        existing = self._client.retrieve(self._collection, ids=pids, with_payload=False, with_vectors=False)
        if existing:
            selector = models.PointIdsList(points=[r.id for r in existing])
            self._client.delete(self._collection, points_selector=selector, wait=True)
        return len(existing)

    def count(self) -> int:
        return int(self._client.count(self._collection, exact=True).count)

    def info(self) -> dict[str, int]:
        return {"points": self.count()}

    def write_snapshot(self, folder: Path) -> dict[str, Any]:
        from kalm_rag.index.storage import write_records

        ids: list[str] = []
        payloads: list[Payload | None] = []
        vectors: list[Any] = []
        offset = None
        while True:
            records, offset = self._client.scroll(
                self._collection, limit=_SCROLL_PAGE, offset=offset, with_payload=True, with_vectors=True
            )
            for record in records:
                item_id, payload = split_payload(record.payload)
                ids.append(item_id)
                payloads.append(payload)
                vectors.append(record.vector)
            if offset is None:
                break
        matrix = np.asarray(vectors, np.float32).reshape(len(ids), self._dim)
        np.save(folder / "vectors.npy", matrix)
        write_records(folder, ids, payloads)
        return {"count": len(ids), "url": self.url, "collection": self._collection}

    def restore(self, folder: Path, count: int) -> None:
        from kalm_rag.index.storage import read_records

        ids, payloads = read_records(folder, count)
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        if vectors.shape != (count, self._dim):
            raise InvalidInputError(f"index data in {folder} is damaged: vectors have shape {vectors.shape}")
        if self.count():
            raise ConfigError(
                f"cannot load into Qdrant collection {self._collection!r}: it already holds points; "
                "pass a config with another collection name"
            )
        self.upsert(ids, vectors, payloads)

    def close(self) -> None:
        self._client.close()
