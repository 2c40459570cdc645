"""QdrantIndex: one front class, three ways to reach Qdrant (the argument picks the path).

- default: the real Qdrant engine embedded in-process (qdrant-edge: HNSW, payload indexes,
  filters, WAL, on-disk segments), no server. ``shard_dir=`` keeps its working folder there
  (otherwise a temporary folder, removed on close).
- ``url=``: a Qdrant server or cluster through qdrant-client, how an index outgrows one machine.
- ``location=":memory:"`` / ``path=``: qdrant-client's local mode (exact, pure Python), the same
  client code path as a server, for tests and tiny collections.

Every path behaves the same (the contract tests run all of them): string ids (stored as uuid5
point ids), similarity scores, the shared filter language, atomic save/load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import IndexContext, PathType, Payload, SearchHit, StoredItem
from kalm_rag.index.filters import Filter, parse_filter
from kalm_rag.index.qdrant_common import ID_NAMESPACE, QdrantConfig
from kalm_rag.index.rwlock import ReadWriteLock
from kalm_rag.index.storage import check_backend, config_from, read_manifest, save_index_dir
from kalm_rag.index.validation import check_dim, check_ids, check_k, check_metric, check_payloads, prepare

__all__ = ["QdrantConfig", "QdrantIndex"]


class _Engine(Protocol):
    """What qdrant_edge.EdgeEngine and qdrant_remote.ClientEngine both provide."""

    mode: str

    def upsert(
        self, ids: list[str], vectors: npt.NDArray[np.float32], payloads: list[Payload | None]
    ) -> None: ...
    def search(
        self, queries: npt.NDArray[np.float32], k: int, node: Filter | None
    ) -> list[list[SearchHit]]: ...
    def get(self, ids: list[str]) -> list[StoredItem | None]: ...
    def delete(self, ids: list[str]) -> int: ...
    def count(self) -> int: ...
    def optimize(self) -> bool: ...
    def info(self) -> dict[str, int]: ...
    def write_snapshot(self, folder: Path) -> dict[str, Any]: ...
    def close(self) -> None: ...


class QdrantIndex(IndexContext):
    """A VectorIndex on Qdrant: embedded by default, or a server with ``url=``."""

    backend = "qdrant"

    def __init__(
        self,
        dim: int,
        *,
        metric: str = "cosine",
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        path: PathType | None = None,
        shard_dir: PathType | None = None,
        config: QdrantConfig | None = None,
    ) -> None:
        self._dim = check_dim(dim)
        self._metric = check_metric(metric)
        self.config = config or QdrantConfig()
        targets = [
            n
            for n, v in (("url", url), ("location", location), ("path", path), ("shard_dir", shard_dir))
            if v
        ]
        if len(targets) > 1:
            raise ConfigError(f"pick one Qdrant target, got {targets}")
        self._lock = ReadWriteLock()
        self._engine: _Engine
        if url or location or path:
            from kalm_rag.index.qdrant_remote import ClientEngine

            self._engine = ClientEngine(
                self._dim,
                self._metric,
                self.config,
                url=url,
                api_key=api_key,
                location=location,
                path=str(path) if path else None,
            )
        else:
            from kalm_rag.index.qdrant_edge import EdgeEngine

            self._engine = EdgeEngine(
                self._dim, self._metric, self.config, shard_dir=Path(shard_dir) if shard_dir else None
            )

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def mode(self) -> str:
        """``"edge"`` (embedded engine), ``"remote"`` (server) or ``"local"`` (client local mode)."""
        return self._engine.mode

    def __len__(self) -> int:
        with self._lock.read():
            return self._engine.count()

    def __repr__(self) -> str:
        return f"QdrantIndex(dim={self._dim}, metric={self._metric!r}, mode={self.mode!r})"

    def add(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        *,
        payloads: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        id_list = check_ids(ids)
        matrix = prepare(vectors, dim=self._dim, metric=self._metric)
        if len(matrix) != len(id_list):
            raise InvalidInputError(f"got {len(id_list)} ids but {len(matrix)} vectors")
        stored = check_payloads(payloads, len(id_list))
        if not id_list:
            return
        with self._lock.write():
            self._engine.upsert(id_list, matrix, stored)

    def search(
        self,
        queries: npt.ArrayLike,
        *,
        k: int = 10,
        filter: Filter | Mapping[str, Any] | None = None,
    ) -> list[list[SearchHit]]:
        k = check_k(k)
        query_matrix = prepare(queries, dim=self._dim, metric=self._metric, what="queries")
        node = parse_filter(filter)
        if not len(query_matrix):
            return []
        with self._lock.read():
            return self._engine.search(query_matrix, k, node)

    def delete(self, ids: Sequence[str]) -> int:
        id_list = check_ids(ids, unique=False)
        if not id_list:
            return 0
        with self._lock.write():
            return self._engine.delete(id_list)

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        id_list = check_ids(ids, unique=False)
        if not id_list:
            return []
        with self._lock.read():
            return self._engine.get(id_list)

    def optimize(self) -> bool:
        """Build pending HNSW graphs now (embedded engine); True if anything was rebuilt."""
        with self._lock.write():
            return self._engine.optimize()

    def info(self) -> dict[str, int]:
        """Engine statistics: points, and for the embedded engine indexed vectors and segments."""
        with self._lock.read():
            return self._engine.info()

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: PathType) -> None:
        # Exclusive: the embedded engine's files are copied and must not change meanwhile.
        with self._lock.write():
            manifest = {
                "backend": self.backend,
                "mode": self._engine.mode,
                "dim": self._dim,
                "metric": self._metric,
                "count": self._engine.count(),
                "config": self.config.to_dict(),
                "id_namespace": str(ID_NAMESPACE),
            }
            save_index_dir(path, manifest, self._engine.write_snapshot)

    @classmethod
    def load(
        cls,
        path: PathType,
        *,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        local_path: PathType | None = None,
        shard_dir: PathType | None = None,
        config: QdrantConfig | None = None,
    ) -> QdrantIndex:
        """Load a saved QdrantIndex.

        An embedded index loads into a fresh working copy (``shard_dir`` or a temporary folder);
        the saved folder itself is never modified. A client-mode index is restored by upserting
        its saved points into the target: ``url=`` / ``location=`` / ``local_path=`` if given,
        else the server it was saved from (``url`` in the manifest) or ``":memory:"``. The
        target collection must be empty or absent.
        """
        manifest, folder = read_manifest(path)
        check_backend(manifest, cls.backend, path)
        dim, metric, count = int(manifest["dim"]), str(manifest["metric"]), int(manifest["count"])
        cfg = config or config_from(QdrantConfig, manifest, path)
        target_given = bool(url or location or local_path)
        if manifest.get("mode") == "edge":
            if target_given:
                raise ConfigError("an embedded (edge) Qdrant index loads only as embedded; drop url/location")
            from kalm_rag.index.qdrant_edge import EdgeEngine

            index = cls.__new__(cls)
            index._dim, index._metric, index.config, index._lock = dim, metric, cfg, ReadWriteLock()
            index._engine = EdgeEngine.from_snapshot(
                folder, dim, metric, cfg, shard_dir=Path(shard_dir) if shard_dir else None
            )
            if index._engine.count() != count:
                index.close()
                raise InvalidInputError(f"index at {path} is damaged: its shard does not hold {count} points")
            return index
        if not target_given:
            url = manifest.get("url") or None
            location = None if url else ":memory:"
        index = cls(
            dim, metric=metric, url=url, api_key=api_key, location=location, path=local_path, config=cfg
        )
        from kalm_rag.index.qdrant_remote import ClientEngine

        if not isinstance(index._engine, ClientEngine):  # pragma: no cover - guarded by the branches above
            raise ConfigError("a client-mode snapshot needs a client target")
        try:
            index._engine.restore(folder, count)
        except BaseException:
            index.close()
            raise
        return index

    def close(self) -> None:
        with self._lock.write():
            self._engine.close()
