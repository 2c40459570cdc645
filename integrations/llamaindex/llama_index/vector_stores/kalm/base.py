"""``KaLMVectorStore``: a LlamaIndex vector store over the kalm_rag indexes.

Each node is stored with LlamaIndex's usual metadata layout (its metadata keys at the top
level plus ``_node_content``, ``ref_doc_id``...) and its text under kalm_rag's text key, so
``MetadataFilters`` translate directly to the shared filter language. The store keeps a map of
node id -> document id (saved with it) to answer ``delete(ref_doc_id)``, ``get_nodes`` and
``delete_nodes`` exactly on every backend.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from llama_index.vector_stores.kalm import _persist
from llama_index.vector_stores.kalm.filters import restrict_to_documents, to_kalm_filter

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import SearchHit, StoredItem, VectorIndex
from kalm_rag.index.exact import top_k
from kalm_rag.index.filters import Filter, matches
from kalm_rag.index.validation import prepare
from kalm_rag.retriever import TEXT_KEY

BACKENDS = ("brute", "hnsw", "qdrant")
_MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)


class KaLMVectorStore(BasePydanticVectorStore):
    """Vector store on a kalm_rag index: ``"brute"`` (exact, default), ``"hnsw"`` or ``"qdrant"``.

    Example:
        .. code-block:: python

            from llama_index.core import StorageContext, VectorStoreIndex
            from llama_index.embeddings.kalm import KaLMEmbedding
            from llama_index.vector_stores.kalm import KaLMVectorStore

            store = KaLMVectorStore(index="hnsw")
            index = VectorStoreIndex.from_documents(
                documents,
                storage_context=StorageContext.from_defaults(vector_store=store),
                embed_model=KaLMEmbedding(model_name="kalm-v2"),
            )
            store.persist("store")                       # or storage_context.persist(dir)
            store = KaLMVectorStore.from_persist_path("store")
    """

    stores_text: bool = True
    flat_metadata: bool = False
    backend: str = "brute"
    metric: str = "cosine"

    _index: VectorIndex | None = PrivateAttr(default=None)
    _index_options: dict[str, Any] = PrivateAttr(default_factory=dict)
    _nodes: dict[str, str | None] = PrivateAttr(default_factory=dict)  # node id -> ref doc id
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    def __init__(
        self,
        index: VectorIndex | str = "brute",
        *,
        metric: str = "cosine",
        index_options: Mapping[str, Any] | None = None,
        **data: Any,
    ) -> None:
        if isinstance(index, str):
            if index not in BACKENDS:
                raise ConfigError(f"unknown index backend {index!r}; choose one of {', '.join(BACKENDS)}")
            super().__init__(backend=index, metric=metric, **data)  # type: ignore[call-arg]
            self._index_options = dict(index_options or {})
            return
        if not isinstance(index, VectorIndex):
            raise ConfigError(f"index must be a backend name or a VectorIndex, got {type(index).__name__}")
        if len(index):
            raise ConfigError(
                "pass an empty index (the store tracks which nodes it holds); reopen a saved store "
                "with KaLMVectorStore.from_persist_path"
            )
        if index_options:
            raise ConfigError("index_options apply only when the index is given by backend name")
        backend = str(getattr(index, "backend", type(index).__name__))
        super().__init__(backend=backend, metric=index.metric, **data)  # type: ignore[call-arg]
        self._index = index

    @classmethod
    def class_name(cls) -> str:
        return "KaLMVectorStore"

    @property
    def client(self) -> VectorIndex | None:
        """The underlying kalm_rag index (``None`` until the first add)."""
        return self._index

    # No __len__: LlamaIndex tests stores for truthiness (`if vector_store:`), so an empty store
    # must not be falsy.
    def count(self) -> int:
        """Number of nodes held."""
        return len(self._nodes)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()

    def _ensure_index(self, dim: int) -> VectorIndex:
        from llama_index.vector_stores.kalm._persist import make_index

        with self._lock:
            if self._index is None:
                self._index = make_index(self.backend, dim, metric=self.metric, options=self._index_options)
            return self._index

    # -- writing -------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes (each must carry its embedding)."""
        if not nodes:
            return []
        ids = [node.node_id for node in nodes]
        vectors = np.asarray([node.get_embedding() for node in nodes], dtype=np.float32)
        payloads = [self._payload(node) for node in nodes]
        with self._lock:
            self._ensure_index(vectors.shape[1]).add(ids, vectors, payloads=payloads)
            for node in nodes:
                self._nodes[node.node_id] = node.ref_doc_id
        return ids

    def _payload(self, node: BaseNode) -> dict[str, Any]:
        reserved = [key for key in node.metadata if str(key).startswith("_kalm")]
        if reserved:
            raise InvalidInputError(f"node {node.node_id}: metadata keys starting with '_kalm' are reserved")
        payload = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
        payload[TEXT_KEY] = node.get_content(metadata_mode=MetadataMode.NONE)
        return payload

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document ``ref_doc_id``."""
        with self._lock:
            self._remove([nid for nid, ref in self._nodes.items() if ref == ref_doc_id])

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes among ``node_ids`` (all when ``None``) that match ``filters``."""
        with self._lock:
            self._remove([item.id for item in self._select(node_ids, filters)])

    def clear(self) -> None:
        with self._lock:
            self._remove(list(self._nodes))

    def _remove(self, ids: list[str]) -> None:
        if ids and self._index is not None:
            self._index.delete(ids)
        for node_id in ids:
            self._nodes.pop(node_id, None)

    # -- reading -------------------------------------------------------------------------------
    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes among ``node_ids`` (all when ``None``) that match ``filters``."""
        return [_to_node(item.payload) for item in self._select(node_ids, filters)]

    def _select(self, node_ids: list[str] | None, filters: MetadataFilters | None) -> list[StoredItem]:
        candidates = list(self._nodes) if node_ids is None else list(dict.fromkeys(node_ids))
        if self._index is None or not candidates:
            return []
        node = to_kalm_filter(filters)
        items = [item for item in self._index.get(candidates) if item is not None]
        return [item for item in items if node is None or matches(node, item.payload)]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` nodes for ``query_embedding``; filters, ``doc_ids``,
        ``node_ids`` and MMR (``mode="mmr"``, ``mmr_threshold``) are honoured."""
        if query.query_embedding is None:
            raise InvalidInputError("KaLMVectorStore.query needs a query_embedding")
        if query.mode not in _MODES:
            raise InvalidInputError(f"query mode {query.mode!r} is not supported; use 'default' or 'mmr'")
        k = query.similarity_top_k
        if self._index is None or not self._nodes:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        node = restrict_to_documents(to_kalm_filter(query.filters), query.doc_ids)
        mmr = query.mode == VectorStoreQueryMode.MMR
        fetch = max(k, int(kwargs.get("mmr_prefetch_k") or 4 * k)) if mmr else k
        if query.node_ids:  # VectorStoreIndex.as_retriever passes [] to mean "no restriction"
            hits = self._exact_among(query.node_ids, query.query_embedding, fetch, node)
        else:
            hits = self._index.search(np.asarray(query.query_embedding, np.float32), k=fetch, filter=node)[0]
        scores = [hit.score for hit in hits]
        if mmr and hits:
            stored = self._index.get([hit.id for hit in hits])
            scores, order = get_top_k_mmr_embeddings(
                query.query_embedding,
                [item.vector.tolist() if item is not None else [] for item in stored],
                similarity_top_k=k,
                embedding_ids=list(range(len(hits))),
                mmr_threshold=query.mmr_threshold,
            )
            hits = [hits[i] for i in order]
        return VectorStoreQueryResult(
            nodes=[_to_node(hit.payload) for hit in hits], similarities=list(scores), ids=[h.id for h in hits]
        )

    def _exact_among(
        self, node_ids: list[str], vector: list[float], k: int, node: Filter | None
    ) -> list[SearchHit]:
        """Exact top-k restricted to ``node_ids``: score just those vectors."""
        assert self._index is not None
        items = [item for item in self._index.get(list(dict.fromkeys(node_ids))) if item is not None]
        items = [item for item in items if node is None or matches(node, item.payload)]
        if not items:
            return []
        query_matrix = prepare(vector, dim=self._index.dim, metric=self.metric, what="query")
        rows, scores = top_k(query_matrix, np.stack([item.vector for item in items]), k, self.metric)
        return [
            SearchHit(items[r].id, float(s), items[r].payload)
            for r, s in zip(rows[0].tolist(), scores[0].tolist(), strict=True)
        ]

    # -- async: the engines are synchronous; keep the event loop free while they work ----------
    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    # -- persistence ---------------------------------------------------------------------------
    def persist(self, persist_path: str, fs: Any = None) -> None:
        """Save to the folder ``persist_path`` atomically (``StorageContext.persist`` passes
        ``<dir>/default__vector_store.json``, which becomes a folder of that name)."""
        _persist.check_local(fs)
        with self._lock:
            _persist.save(
                Path(persist_path), self._index, backend=self.backend, metric=self.metric, nodes=self._nodes
            )

    @classmethod
    def from_persist_path(
        cls,
        persist_path: str | os.PathLike[str],
        fs: Any = None,
        **index_options: Any,
    ) -> KaLMVectorStore:
        """Reopen a store saved by :meth:`persist`; ``index_options`` go to the index's ``load``."""
        _persist.check_local(fs)
        manifest, index = _persist.load(Path(persist_path), index_options)
        store = cls(
            manifest["backend"], metric=manifest["metric"], index_options=None if index else index_options
        )
        store._index = index
        store._nodes = dict(manifest["nodes"])
        return store

    @classmethod
    def from_persist_dir(
        cls, persist_dir: str | os.PathLike[str], namespace: str = "default", **index_options: Any
    ) -> KaLMVectorStore:
        """Reopen the store that ``StorageContext.persist(persist_dir)`` saved."""
        return cls.from_persist_path(Path(persist_dir) / f"{namespace}__vector_store.json", **index_options)


def _to_node(payload: Mapping[str, Any] | None) -> BaseNode:
    data = dict(payload or {})
    text = data.get(TEXT_KEY)
    return metadata_dict_to_node(data, text=None if text is None else str(text))
