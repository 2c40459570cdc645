"""Exact search over an in-memory float32 matrix: the oracle for tests, and the right index
below roughly 20-50k vectors, where a batched matmul beats any graph (see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import InvalidInputError
from kalm_rag.index.base import IndexContext, PathType, Payload, SearchHit, StoredItem, make_hit
from kalm_rag.index.exact import top_k
from kalm_rag.index.filters import Filter, parse_filter
from kalm_rag.index.payload_index import CachedPayloadMasks
from kalm_rag.index.rwlock import ReadWriteLock
from kalm_rag.index.storage import (
    check_backend,
    load_vectors,
    read_manifest,
    read_records,
    save_index_dir,
    write_records,
)
from kalm_rag.index.validation import (
    check_dim,
    check_ids,
    check_k,
    check_metric,
    check_payloads,
    detached,
    prepare,
)


class BruteForceIndex(IndexContext):
    """Exact nearest neighbours by matrix product; rows stay dense (a delete moves the last row
    into the hole), so a search scores exactly the live items."""

    backend = "brute"

    def __init__(self, dim: int, *, metric: str = "cosine") -> None:
        self._dim = check_dim(dim)
        self._metric = check_metric(metric)
        self._vectors = np.empty((0, self._dim), np.float32)  # capacity grows by doubling
        self._sq_norms = np.empty(0, np.float32)  # cached for l2
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._payloads: list[Payload | None] = []
        self._lock = ReadWriteLock()
        self._version = object()  # replaced on every write: filter masks are rebuilt after it
        self._masks = CachedPayloadMasks()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"BruteForceIndex(dim={self._dim}, metric={self._metric!r}, size={len(self)})"

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
        with self._lock.write():
            rows = np.empty(len(id_list), np.int64)
            for i, item_id in enumerate(id_list):
                row = self._rows.get(item_id)
                if row is None:
                    row = len(self._ids)
                    self._rows[item_id] = row
                    self._ids.append(item_id)
                    self._payloads.append(None)
                self._payloads[row] = stored[i]
                rows[i] = row
            self._reserve(len(self._ids))
            self._vectors[rows] = matrix
            self._sq_norms[rows] = np.einsum("ij,ij->i", matrix, matrix)
            self._version = object()

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
        with self._lock.read():
            n = len(self._ids)
            mask = None
            if node is not None:
                mask = self._masks.allowed(self._version, self._payloads, node, n)
            rows, scores = top_k(
                query_matrix, self._vectors[:n], k, self._metric, mask=mask, sq_norms=self._sq_norms[:n]
            )
            return [
                [
                    make_hit(self._ids[r], float(s), detached(self._payloads[r]))
                    for r, s in zip(row_ids.tolist(), row_scores.tolist(), strict=True)
                ]
                for row_ids, row_scores in zip(rows, scores, strict=True)
            ]

    def delete(self, ids: Sequence[str]) -> int:
        id_list = check_ids(ids, unique=False)
        removed = 0
        with self._lock.write():
            for item_id in dict.fromkeys(id_list):
                row = self._rows.pop(item_id, None)
                if row is None:
                    continue  # unknown ids are ignored: delete is idempotent
                last = len(self._ids) - 1
                if row != last:  # move the last row into the hole to keep rows dense
                    moved = self._ids[last]
                    self._vectors[row] = self._vectors[last]
                    self._sq_norms[row] = self._sq_norms[last]
                    self._ids[row] = moved
                    self._payloads[row] = self._payloads[last]
                    self._rows[moved] = row
                self._ids.pop()
                self._payloads.pop()
                removed += 1
                self._version = object()
        return removed

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        id_list = check_ids(ids, unique=False)
        with self._lock.read():
            out: list[StoredItem | None] = []
            for item_id in id_list:
                row = self._rows.get(item_id)
                out.append(
                    None
                    if row is None
                    else StoredItem(item_id, self._vectors[row].copy(), detached(self._payloads[row]))
                )
            return out

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: PathType) -> None:
        with self._lock.read():
            n = len(self._ids)
            manifest = {"backend": self.backend, "dim": self._dim, "metric": self._metric, "count": n}

            def write(folder: Path) -> None:
                np.save(folder / "vectors.npy", self._vectors[:n])
                write_records(folder, self._ids, self._payloads)

            save_index_dir(path, manifest, write)

    @classmethod
    def load(cls, path: PathType) -> BruteForceIndex:
        manifest, folder = read_manifest(path)
        check_backend(manifest, cls.backend, path)
        index = cls(int(manifest["dim"]), metric=str(manifest["metric"]))
        count = int(manifest["count"])
        ids, payloads = read_records(folder, count)
        vectors = load_vectors(folder, count, index.dim)
        index._vectors = np.ascontiguousarray(vectors)
        index._sq_norms = np.einsum("ij,ij->i", vectors, vectors).astype(np.float32)
        index._ids = ids
        index._rows = {item_id: row for row, item_id in enumerate(ids)}
        index._payloads = payloads
        return index

    def _reserve(self, size: int) -> None:
        capacity = len(self._vectors)
        if size <= capacity:
            return
        new_capacity = max(size, 2 * capacity, 64)
        grown = np.empty((new_capacity, self._dim), np.float32)
        grown[:capacity] = self._vectors
        self._vectors = grown
        norms = np.empty(new_capacity, np.float32)
        norms[:capacity] = self._sq_norms
        self._sq_norms = norms
