"""Approximate search with hnswlib, behind the shared VectorIndex contract.

hnswlib knows only int labels, does not save ``ef``, raises when it cannot return ``k`` items
and has no payloads; this wrapper keeps the string-id <-> label map and the payload store,
persists them beside hnswlib's own file, and grows the index by doubling. It also keeps a
dense float32 copy of the vectors (hnswlib reads vectors back one Python list at a time) and an
inverted payload index, so a filter is answered by the plan its selectivity calls for (exact
scoring of the allowed items, or an unfiltered search filtered afterwards; see hnsw_filter.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import ConfigError, InvalidInputError, require
from kalm_rag.index.base import IndexContext, PathType, Payload, SearchHit, StoredItem, make_hit
from kalm_rag.index.exact import top_k
from kalm_rag.index.filters import Filter, parse_filter
from kalm_rag.index.hnsw_files import load_graph, read_dense_vectors, read_labels
from kalm_rag.index.hnsw_filter import plan_filtered, post_filter
from kalm_rag.index.payload_index import PayloadIndex
from kalm_rag.index.runtime import available_cores
from kalm_rag.index.rwlock import ReadWriteLock
from kalm_rag.index.storage import (
    check_backend,
    config_from,
    read_manifest,
    read_records,
    save_index_dir,
    write_json,
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


@dataclass(frozen=True)
class HnswConfig:
    """HNSW parameters. Defaults reach recall@10 ~0.997 on 20k real 384-d embeddings.

    ``ef`` is the search beam; hnswlib widens it to ``k`` by itself when ``k`` is larger.
    ``num_threads`` ``None`` uses the cores available to the process for adds and query
    batches; a single query always runs on one thread (threads only add overhead there).

    Filtered searches (hnsw_filter.py): filters that keep at most ``exact_filter_limit`` items,
    or at most ``exact_cost_ratio`` x the search beam, are answered by exact scoring; larger
    ones by an unfiltered search for ``filter_oversample`` x k / selectivity candidates,
    filtered afterwards (up to ``max_filter_fetch`` candidates).
    """

    m: int = 16
    ef_construction: int = 200
    ef: int = 100
    num_threads: int | None = None
    capacity: int = 1024
    exact_filter_limit: int = 2000
    seed: int = 100
    exact_cost_ratio: float = 6.0  # measured at 100k: see hnsw_filter.py
    filter_oversample: float = 2.0
    max_filter_fetch: int = 4096

    def __post_init__(self) -> None:
        for name in ("m", "ef_construction", "ef", "capacity", "exact_filter_limit", "max_filter_fetch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"HnswConfig.{name} must be a positive integer, got {value!r}")
        for name in ("exact_cost_ratio", "filter_oversample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
                raise ConfigError(f"HnswConfig.{name} must be a number >= 1, got {value!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ConfigError(f"HnswConfig.num_threads must be None or >= 1, got {self.num_threads!r}")

    @property
    def threads(self) -> int:
        return self.num_threads or available_cores()


class HnswIndex(IndexContext):
    """hnswlib HNSW graph with string ids, payloads, filters, upserts, deletes and persistence."""

    backend = "hnsw"

    def __init__(self, dim: int, *, metric: str = "cosine", config: HnswConfig | None = None) -> None:
        self._dim = check_dim(dim)
        self._metric = check_metric(metric)
        self.config = config or HnswConfig()
        self._threads = self.config.threads  # resolved once: it may ask the OS
        self._index = self._new_engine()
        self._index.init_index(
            max_elements=self.config.capacity,
            M=self.config.m,
            ef_construction=self.config.ef_construction,
            random_seed=self.config.seed,
            allow_replace_deleted=True,  # new items reuse the slots of deleted ones
        )
        self._index.set_ef(self.config.ef)
        self._labels: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._payloads: dict[int, Payload] = {}  # only items that have a payload
        self._next_label = 0
        self._lock = ReadWriteLock()
        # Dense copy of the live vectors (row order), with label <-> row maps, for exact scoring.
        self._vectors = np.empty((0, self._dim), np.float32)
        self._row_labels = np.empty(0, np.int64)
        self._label_rows = np.empty(0, np.int64)
        self._payload_index = PayloadIndex()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        return f"HnswIndex(dim={self._dim}, metric={self._metric!r}, size={len(self)}, config={self.config})"

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
        threads = self._threads
        with self._lock.write():
            updates = [i for i, item_id in enumerate(id_list) if item_id in self._labels]
            inserts = [i for i, item_id in enumerate(id_list) if item_id not in self._labels]
            self._reserve(len(inserts))
            first_row = len(self._labels)
            if updates:  # an existing live label: hnswlib replaces its vector in place
                labels = np.array([self._labels[id_list[i]] for i in updates], np.int64)
                self._index.add_items(matrix[updates], labels, num_threads=threads)
                self._vectors[self._label_rows[labels]] = matrix[updates]
            if inserts:
                # Never re-add a deleted label: with replace_deleted hnswlib could leave two
                # slots carrying it. Fresh labels may take over deleted slots instead.
                labels = np.arange(self._next_label, self._next_label + len(inserts), dtype=np.int64)
                self._index.add_items(matrix[inserts], labels, num_threads=threads, replace_deleted=True)
                for i, label in zip(inserts, labels.tolist(), strict=True):
                    self._labels[id_list[i]] = label
                    self._ids[label] = id_list[i]
                self._next_label += len(inserts)
                self._place(labels, matrix[inserts], first_row)
            for item_id, payload in zip(id_list, stored, strict=True):
                label = self._labels[item_id]
                self._payload_index.remove(label, self._payloads.get(label))
                self._payload_index.add(label, payload)
                if payload is None:
                    self._payloads.pop(label, None)
                else:
                    self._payloads[label] = payload

    def search(
        self,
        queries: npt.ArrayLike,
        *,
        k: int = 10,
        filter: Filter | Mapping[str, Any] | None = None,
    ) -> list[list[SearchHit]]:
        k = check_k(k)
        query_matrix = prepare(queries, dim=self._dim, metric=self._metric, what="queries")
        node = parse_filter(filter) if filter is not None else None
        with self._lock.read():
            live = len(self._labels)
            if not live or not len(query_matrix):
                return [[] for _ in range(len(query_matrix))]
            if node is None:
                labels, scores = self._ann(query_matrix, min(k, live), None)
            else:
                labels, scores = self._filtered(query_matrix, k, node, live)
            ids, payloads = self._ids, self._payloads
            if not payloads:  # the common no-payload case skips a lookup per hit
                return [
                    [make_hit(ids[i], s, None) for i, s in zip(li, ls, strict=True)]
                    for li, ls in zip(labels, scores, strict=True)
                ]
            return [
                [make_hit(ids[i], s, detached(payloads.get(i))) for i, s in zip(li, ls, strict=True)]
                for li, ls in zip(labels, scores, strict=True)
            ]

    def delete(self, ids: Sequence[str]) -> int:
        id_list = check_ids(ids, unique=False)
        removed = 0
        with self._lock.write():
            for item_id in dict.fromkeys(id_list):
                label = self._labels.pop(item_id, None)
                if label is None:
                    continue  # unknown ids are ignored: delete is idempotent
                self._index.mark_deleted(label)
                del self._ids[label]
                self._payload_index.remove(label, self._payloads.pop(label, None))
                self._unplace(label)
                removed += 1
        return removed

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        id_list = check_ids(ids, unique=False)
        with self._lock.read():
            known = [item_id for item_id in id_list if item_id in self._labels]
            labels = [self._labels[item_id] for item_id in known]
            vectors = self._vectors[self._label_rows[labels]] if labels else None
            found = {
                item_id: StoredItem(item_id, vectors[row].copy(), detached(self._payloads.get(label)))
                for row, (item_id, label) in enumerate(zip(known, labels, strict=True))
                if vectors is not None
            }
        return [found.get(item_id) for item_id in id_list]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: PathType) -> None:
        with self._lock.read():
            ids = list(self._labels)
            manifest = {
                "backend": self.backend,
                "dim": self._dim,
                "metric": self._metric,
                "count": len(ids),
                "config": asdict(self.config),
            }

            def write(folder: Path) -> None:
                self._index.save_index(str(folder / "hnsw.bin"))
                labels = [self._labels[item_id] for item_id in ids]
                write_json(folder / "labels.json", {"labels": labels, "next_label": self._next_label})
                np.save(folder / "vectors.npy", self._vectors[self._label_rows[labels]])
                write_records(folder, ids, [self._payloads.get(label) for label in labels])

            save_index_dir(path, manifest, write)

    @classmethod
    def load(cls, path: PathType, *, config: HnswConfig | None = None) -> HnswIndex:
        """Load a saved index. ``config`` overrides the search-time settings (``ef``,
        ``num_threads`` and the filter plan's); the graph's own settings come from the file."""
        manifest, folder = read_manifest(path)
        check_backend(manifest, cls.backend, path)
        saved = config_from(HnswConfig, manifest, path)
        if config is not None:
            saved = replace(
                saved,
                ef=config.ef,
                num_threads=config.num_threads,
                exact_filter_limit=config.exact_filter_limit,
                exact_cost_ratio=config.exact_cost_ratio,
                filter_oversample=config.filter_oversample,
                max_filter_fetch=config.max_filter_fetch,
            )
        index = cls(int(manifest["dim"]), metric=str(manifest["metric"]), config=saved)
        count = int(manifest["count"])
        ids, payloads = read_records(folder, count)
        labels, next_label = read_labels(folder, count)
        engine = index._new_engine()
        load_graph(engine, folder, path, index._dim, count)
        engine.set_ef(index.config.ef)
        index._index = engine
        index._labels = dict(zip(ids, labels, strict=True))
        index._ids = dict(zip(labels, ids, strict=True))
        index._payloads = {label: p for label, p in zip(labels, payloads, strict=True) if p is not None}
        index._next_label = next_label
        for label, payload in index._payloads.items():
            index._payload_index.add(label, payload)
        label_array = np.asarray(labels, np.int64)
        vectors = read_dense_vectors(folder, engine, labels, index._dim)
        index._place(label_array, vectors, 0)
        return index

    # -- internals -----------------------------------------------------------------------------
    def _new_engine(self) -> Any:
        hnswlib: Any = require("hnswlib", "index")
        return hnswlib.Index(space="l2" if self._metric == "l2" else "ip", dim=self._dim)

    def _reserve(self, new_items: int) -> None:
        # Slots in use include deleted ones until a new item replaces them.
        current = self._index.get_current_count()
        needed = max(current, len(self._labels) + new_items)
        capacity = self._index.get_max_elements()
        if needed > capacity:
            self._index.resize_index(max(needed, 2 * capacity))

    def _place(self, labels: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], first_row: int) -> None:
        """Store new items' vectors in rows ``first_row...`` of the dense copy."""
        end = first_row + len(labels)
        if end > len(self._vectors):
            size = max(end, 2 * len(self._vectors), 64)
            grown = np.empty((size, self._dim), np.float32)
            grown[:first_row] = self._vectors[:first_row]
            self._vectors = grown
            self._row_labels = np.resize(self._row_labels, size)
        if self._next_label > len(self._label_rows):
            old = len(self._label_rows)
            self._label_rows = np.resize(self._label_rows, max(self._next_label, 2 * old, 64))
            self._label_rows[old:] = -1
        self._vectors[first_row:end] = vectors
        self._row_labels[first_row:end] = labels
        self._label_rows[labels] = np.arange(first_row, end)

    def _unplace(self, label: int) -> None:
        """Drop a deleted item's row: the last live row moves into the hole (call after the
        label left ``self._labels``)."""
        row, last = int(self._label_rows[label]), len(self._labels)
        if row != last:
            moved = int(self._row_labels[last])
            self._vectors[row] = self._vectors[last]
            self._row_labels[row] = moved
            self._label_rows[moved] = row
        self._label_rows[label] = -1

    def _filtered(
        self, queries: npt.NDArray[np.float32], k: int, node: Filter, live: int
    ) -> tuple[list[list[int]], list[list[float]]]:
        cfg = self.config
        mask = self._payload_index.allowed(node, self._next_label)
        allowed = int(np.count_nonzero(mask))
        if not allowed:
            return [[] for _ in range(len(queries))], [[] for _ in range(len(queries))]
        need = min(k, allowed)
        plan = plan_filtered(
            allowed,
            live,
            k,
            ef=cfg.ef,
            exact_limit=cfg.exact_filter_limit,
            cost_ratio=cfg.exact_cost_ratio,
            oversample=cfg.filter_oversample,
            max_fetch=cfg.max_filter_fetch,
        )
        if plan.strategy == "exact":
            return self._exact(queries, k, np.flatnonzero(mask))
        if plan.strategy == "callable":
            return self._ann(queries, need, np.flatnonzero(mask).tolist())
        labels, distances, missing = post_filter(
            self._knn, queries, need, plan.fetch, mask, min(live, cfg.max_filter_fetch)
        )
        label_rows: list[list[int]] = labels.tolist()
        score_rows: list[list[float]] = self._scores(distances).tolist()
        if len(missing):  # too few allowed items among the candidates: score these exactly
            exact_labels, exact_scores = self._exact(queries[missing], k, np.flatnonzero(mask))
            for i, row in enumerate(missing.tolist()):
                label_rows[row], score_rows[row] = exact_labels[i], exact_scores[i]
        return label_rows, score_rows

    def _knn(self, queries: npt.NDArray[np.float32], k: int) -> tuple[Any, Any]:
        threads = 1 if len(queries) == 1 else self._threads
        labels, distances = self._index.knn_query(queries, k=k, num_threads=threads)
        return labels, distances

    def _scores(self, distances: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # hnswlib's "l2" space reports squared distances, its "ip" space 1 - <q, v>
        if self._metric == "l2":
            return np.subtract(0.0, np.sqrt(np.maximum(distances, 0.0)), dtype=np.float32)
        return np.subtract(1.0, distances, dtype=np.float32)

    def _ann(
        self, queries: npt.NDArray[np.float32], k: int, allowed: list[int] | None
    ) -> tuple[list[list[int]], list[list[float]]]:
        allowed_set = set(allowed) if allowed is not None else None
        # The filter callable re-enters Python for every visited node: keep it on one thread.
        threads = 1 if len(queries) == 1 or allowed_set is not None else self._threads
        try:
            labels, distances = self._index.knn_query(
                queries,
                k=k,
                num_threads=threads,
                filter=allowed_set.__contains__ if allowed_set is not None else None,
            )
        except RuntimeError:
            # hnswlib could not reach k items (many deletions, a restrictive filter): score exactly.
            labels_in = self._row_labels[: len(self._labels)] if allowed is None else np.asarray(allowed)
            return self._exact(queries, k, labels_in)
        # hnswlib's "l2" space reports squared distances, its "ip" space 1 - <q, v>. For one
        # query plain Python on ~10 floats beats another numpy call; for a batch numpy wins.
        if len(queries) > 1:
            sims = 0.0 - np.sqrt(np.maximum(distances, 0.0)) if self._metric == "l2" else 1.0 - distances
            return labels.tolist(), sims.tolist()
        (row,) = distances.tolist()
        if self._metric == "l2":
            return labels.tolist(), [[-math.sqrt(d) if d > 0 else 0.0 for d in row]]
        return labels.tolist(), [[1.0 - d for d in row]]

    def _exact(
        self, queries: npt.NDArray[np.float32], k: int, allowed: npt.NDArray[np.int64]
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Exact top-k among the labels ``allowed``, scored from the dense copy."""
        if not len(allowed):
            return [[] for _ in range(len(queries))], [[] for _ in range(len(queries))]
        vectors = self._vectors[self._label_rows[allowed]]
        rows, scores = top_k(queries, vectors, k, self._metric)
        return allowed[rows].tolist(), scores.tolist()
