"""``KaLMVectorStore``: a LangChain vector store over the kalm_rag indexes.

Backends: ``"brute"`` (exact, the default: best below ~20-50k vectors), ``"hnsw"`` (hnswlib) and
``"qdrant"`` (embedded Qdrant engine, or a Qdrant server with ``index_options={"url": ...}``),
or any ready ``kalm_rag.VectorIndex``. Scores are similarities (higher is better); metadata
filters use kalm_rag's shared filter language, identical on every backend.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import SearchHit, VectorIndex
from kalm_rag.index.filters import Filter
from langchain_kalm._indexes import (
    BACKENDS,
    hit_to_document,
    make_index,
    stored_to_document,
    to_payload,
)
from langchain_kalm.embeddings import KaLMEmbeddings

FilterSpec = Filter | Mapping[str, Any] | None
STORE_MANIFEST = "vectorstore.json"
STORE_FORMAT_VERSION = 1


class KaLMVectorStore(VectorStore):
    """Vector store on a kalm_rag index (exact, HNSW or Qdrant).

    Example:
        .. code-block:: python

            from langchain_kalm import KaLMEmbeddings, KaLMVectorStore

            store = KaLMVectorStore(KaLMEmbeddings(model="kalm-v2"), index="hnsw")
            store.add_texts(["apt installs packages"], metadatas=[{"lang": "en"}], ids=["a"])
            docs = store.similarity_search("how to install software", k=3, filter={"lang": "en"})
            store.save("my_store")
            store = KaLMVectorStore.load("my_store")  # the model is named in the folder

    ``index`` is a backend name (the index is created once the vector size is known) or an
    existing ``VectorIndex``; ``index_options`` go to the backend's constructor, e.g.
    ``{"config": HnswConfig(ef=200)}`` or ``{"url": "http://qdrant:6333"}``.
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        index: VectorIndex | str = "brute",
        metric: str = "cosine",
        index_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise ConfigError(f"embedding must be a LangChain Embeddings, got {type(embedding).__name__}")
        self._embedding = embedding
        self._lock = threading.Lock()
        self._index: VectorIndex | None
        if isinstance(index, str):
            if index not in BACKENDS:
                raise ConfigError(f"unknown index backend {index!r}; choose one of {', '.join(BACKENDS)}")
            self._backend, self._metric = index, metric
            self._index_options = dict(index_options or {})
            self._index = None
            if isinstance(embedding, KaLMEmbeddings):  # size known now: build the index eagerly
                self._ensure_index(embedding.dim)
        else:
            if not isinstance(index, VectorIndex):
                raise ConfigError(
                    f"index must be a backend name or a VectorIndex, got {type(index).__name__}"
                )
            if index_options:
                raise ConfigError("index_options apply only when the index is given by backend name")
            self._backend = str(getattr(index, "backend", type(index).__name__))
            self._metric, self._index_options, self._index = index.metric, {}, index

    # -- basics --------------------------------------------------------------------------------
    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def index(self) -> VectorIndex | None:
        """The underlying kalm_rag index (``None`` until the first add when the size was unknown)."""
        return self._index

    # No __len__: code that tests a store for truthiness (`if store:`) must not see an empty
    # store as missing.
    def count(self) -> int:
        """Number of documents held."""
        return 0 if self._index is None else len(self._index)

    def close(self) -> None:
        """Release the index's engine resources (Qdrant files, connections)."""
        if self._index is not None:
            self._index.close()

    def _ensure_index(self, dim: int) -> VectorIndex:
        with self._lock:
            if self._index is None:
                self._index = make_index(self._backend, dim, metric=self._metric, options=self._index_options)
            return self._index

    # -- writing -------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert ``texts``; an existing id is replaced. Missing ids are generated."""
        _reject_unknown(kwargs)
        text_list = list(texts)
        if metadatas is not None and len(metadatas) != len(text_list):
            raise InvalidInputError(f"got {len(text_list)} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != len(text_list):
            raise InvalidInputError(f"got {len(text_list)} texts but {len(ids)} ids")
        id_list = [item or uuid.uuid4().hex for item in (ids or [None] * len(text_list))]
        payloads = [to_payload(t, metadatas[i] if metadatas else None) for i, t in enumerate(text_list)]
        if not text_list:
            return []
        vectors = np.asarray(self._embedding.embed_documents(text_list), dtype=np.float32)
        self._ensure_index(vectors.shape[1]).add(id_list, vectors, payloads=payloads)
        return id_list

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete ``ids`` (unknown ids are ignored)."""
        _reject_unknown(kwargs)
        if ids is None:
            raise InvalidInputError("delete needs the ids to remove")
        if self._index is not None:
            self._index.delete(list(ids))
        return True

    # -- reading -------------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents for the known ``ids``, in the order asked; unknown ids are skipped."""
        if self._index is None or not ids:
            return []
        return [stored_to_document(item) for item in self._index.get(list(ids)) if item is not None]

    def _search(self, vector: Sequence[float], k: int, filter: FilterSpec) -> list[SearchHit]:
        if self._index is None:
            if not isinstance(k, int) or k < 1:
                raise InvalidInputError(f"k must be a positive integer, got {k!r}")
            return []
        return self._index.search(np.asarray(vector, dtype=np.float32), k=k, filter=filter)[0]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: FilterSpec = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Best ``k`` documents for a vector, with similarity scores (higher is better)."""
        _reject_unknown(kwargs)
        return [(hit_to_document(hit), hit.score) for hit in self._search(embedding, k, filter)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: FilterSpec = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Best ``k`` documents for a query (embedded with the query instruction), with scores."""
        vector = self._embedding.embed_query(query)
        return self.similarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    def similarity_search(
        self, query: str, k: int = 4, filter: FilterSpec = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # Scores are similarities; map them onto [0, 1] for score_threshold and relevance search.
        if self._metric == "l2":  # score = -distance; unit vectors are at most sqrt(2) apart
            return lambda score: self._euclidean_relevance_score_fn(-score)
        return _similarity_to_relevance  # cosine, and dot on unit vectors, lie in [-1, 1]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: FilterSpec = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Fetch ``fetch_k`` candidates, then pick ``k`` that are relevant and diverse (MMR)."""
        _reject_unknown(kwargs)
        hits = self._search(embedding, max(fetch_k, k), filter)
        if not hits or self._index is None:
            return []
        stored = self._index.get([hit.id for hit in hits])
        vectors = [item.vector.tolist() for item in stored if item is not None]
        if len(vectors) != len(hits):  # deleted between the search and the fetch
            hits = [hit for hit, item in zip(hits, stored, strict=True) if item is not None]
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32), vectors, lambda_mult=lambda_mult, k=k
        )
        return [hit_to_document(hits[i]) for i in chosen]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: FilterSpec = None,
        **kwargs: Any,
    ) -> list[Document]:
        vector = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter, **kwargs)

    # -- construction and persistence ----------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> KaLMVectorStore:
        """A new store holding ``texts``; ``kwargs`` go to the constructor (``index=``...)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the store to the folder ``path`` atomically.

        ``path`` may be new, empty, or a folder kalm-rag saved; any other folder is refused
        unless ``overwrite=True``.

        With ``KaLMEmbeddings`` the folder names the model, so ``load`` needs no embedding, and
        it is also a saved ``kalm_rag.Retriever`` (``kalm-rag serve --index`` serves it).
        """
        from kalm_rag._atomic import atomic_folder
        from langchain_kalm._persist import retriever_manifest

        target = Path(path)
        spec = self._embedding.spec() if isinstance(self._embedding, KaLMEmbeddings) else None
        with atomic_folder(target, overwrite=overwrite, kind="langchain-store") as tmp:
            if self._index is not None:
                self._index.save(tmp / "index")
            manifest = {
                "format_version": STORE_FORMAT_VERSION,
                "backend": self._backend,
                "metric": self._metric,
                "embedding": spec,
            }
            (tmp / STORE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            if isinstance(self._embedding, KaLMEmbeddings) and self._index is not None:
                retriever = retriever_manifest(self._embedding, self._index.dim)
                if retriever is not None:
                    (tmp / retriever[0]).write_text(
                        json.dumps(retriever[1], indent=2) + "\n", encoding="utf-8"
                    )
        return target

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], embedding: Embeddings | None = None, **index_options: Any
    ) -> KaLMVectorStore:
        """Open a folder written by :meth:`save`; ``index_options`` go to the index's ``load``."""
        from kalm_rag._atomic import recover_folder
        from kalm_rag.index.persist import load_index
        from langchain_kalm._persist import read_store_manifest

        folder = Path(path)
        recover_folder(folder)  # a save that crashed between its two renames
        manifest = read_store_manifest(folder / STORE_MANIFEST, STORE_FORMAT_VERSION)
        if embedding is None:
            spec = manifest.get("embedding")
            if not spec:
                raise InvalidInputError(f"{folder} was saved with a non-KaLM embedding; pass embedding=")
            embedding = KaLMEmbeddings.from_spec(spec)
        if (folder / "index").is_dir():
            return cls(embedding, index=load_index(folder / "index", **index_options))
        return cls(
            embedding, index=manifest["backend"], metric=manifest["metric"], index_options=index_options
        )


def _similarity_to_relevance(score: float) -> float:
    return min(1.0, max(0.0, (1.0 + score) / 2.0))


def _reject_unknown(kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise InvalidInputError(f"unsupported keyword argument(s): {', '.join(sorted(kwargs))}")
