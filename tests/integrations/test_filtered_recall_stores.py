"""Filtered search through Retriever, the LangChain store and the LlamaIndex store is right:
recall@10 against exact filtered search on real embeddings, for each backend they build.

The corpus is tests/real_embeddings.py (~6.1k real dev texts embedded with the packaged model,
cached across sessions). The stores get those cached vectors instead of re-embedding 6k texts
per test: the Retriever's index and BM25 are filled as ``add_texts`` fills them, the LangChain
store embeds through a LangChain ``Embeddings`` that looks the cached vectors up, and LlamaIndex
nodes carry their embedding as LlamaIndex allows. The embedded Qdrant engine gets low
thresholds so that it walks HNSW graphs at this size, as it does by default at 100k.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from kalm_rag.index.brute import BruteForceIndex
from kalm_rag.index.fusion import reciprocal_rank_fusion
from kalm_rag.index.hnsw import HnswIndex
from kalm_rag.index.qdrant import QdrantConfig, QdrantIndex

pytestmark = pytest.mark.filterwarnings("ignore:.*were truncated")
EDGE_GRAPH = QdrantConfig(indexing_threshold_kb=1000, full_scan_threshold_kb=100)
FILTERS: dict[str, dict[str, Any]] = {
    "50%": {"half": 1},
    "10%": {"tenant": 3},
    "1%": {"bucket": 7},
    "3% correlated": {"lang": "de"},
}
N_QUERIES = 40


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def oracle(real_corpus: dict[str, Any]) -> Iterator[BruteForceIndex]:
    index = BruteForceIndex(real_corpus["vectors"].shape[1])
    index.add(real_corpus["ids"], real_corpus["vectors"], payloads=real_corpus["payloads"])
    yield index


def truth_ids(
    oracle: BruteForceIndex, queries: np.ndarray, spec: dict[str, Any], k: int = 10
) -> list[list[str]]:
    return [[h.id for h in row] for row in oracle.search(queries, k=k, filter=spec)]


def make_backend(kind: str, dim: int) -> Any:
    if kind == "brute":
        return None  # Retriever's default
    if kind == "hnsw":
        return HnswIndex(dim)
    return QdrantIndex(dim, config=EDGE_GRAPH)


@pytest.mark.parametrize("kind", ["brute", "hnsw", "qdrant"])
def test_retriever_dense_and_hybrid_filtered_recall(
    kind: str, real_corpus: dict[str, Any], oracle: BruteForceIndex, default_encoder: Any
) -> None:
    from kalm_rag.retriever import TEXT_KEY, Retriever, RetrieverConfig

    retriever = Retriever(
        default_encoder, make_backend(kind, oracle.dim), config=RetrieverConfig(hybrid_bm25=True)
    )
    ids, texts, payloads = real_corpus["ids"], real_corpus["texts"], real_corpus["payloads"]
    retriever.index.add(
        ids,
        real_corpus["vectors"],
        payloads=[{**p, TEXT_KEY: t} for p, t in zip(payloads, texts, strict=True)],
    )
    assert retriever.bm25 is not None
    retriever.bm25.add(ids, texts, payloads=payloads)
    query_texts = real_corpus["query_texts"][:N_QUERIES]
    query_vectors = default_encoder.encode_query(query_texts)
    report = {}
    for name, spec in FILTERS.items():
        found = [[c.id for c in retriever.search(q, k=10, filter=spec)] for q in query_texts]
        report[name] = recall(found, truth_ids(oracle, query_vectors, spec))
        assert all(
            c.metadata[key] == spec[key]
            for q in query_texts[:3]
            for c in retriever.search(q, filter=spec)
            for key in spec
        )
    # hybrid: the same fusion over exact dense results is the reference
    spec = FILTERS["10%"]
    found, truth = [], []
    for q, vector in zip(query_texts, query_vectors, strict=True):
        found.append([c.id for c in retriever.search(q, k=10, filter=spec, hybrid=True)])
        sparse = retriever.bm25.search(q, k=50, filter=spec)[0]
        dense = oracle.search(vector, k=50, filter=spec)[0]
        truth.append([h.id for h in reciprocal_rank_fusion([dense, sparse], 60, limit=10)])
    report["hybrid 10%"] = recall(found, truth)
    retriever.index.close()
    assert min(report.values()) >= 0.95, f"{kind}: {report}"


class CachedEmbeddings:
    """A LangChain Embeddings answering from the cached real vectors (no re-embedding)."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self._by_text = {t: v for t, v in zip(texts, vectors, strict=True)}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._by_text[t].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._by_text[text].tolist()


@pytest.mark.parametrize("backend", ["brute", "hnsw", "qdrant"])
def test_langchain_store_filtered_recall(
    backend: str, real_corpus: dict[str, Any], oracle: BruteForceIndex
) -> None:
    from langchain_core.embeddings import Embeddings
    from langchain_kalm import KaLMVectorStore

    embeddings = type("Cached", (CachedEmbeddings, Embeddings), {})(
        real_corpus["texts"], real_corpus["vectors"]
    )
    options = {"config": EDGE_GRAPH} if backend == "qdrant" else {}
    store = KaLMVectorStore(embeddings, index=backend, index_options=options)
    unique = dict(zip(real_corpus["texts"], range(len(real_corpus["texts"])), strict=False))  # one per text
    rows = sorted(unique.values())
    store.add_texts(
        [real_corpus["texts"][i] for i in rows],
        metadatas=[real_corpus["payloads"][i] for i in rows],
        ids=[real_corpus["ids"][i] for i in rows],
    )
    local = BruteForceIndex(oracle.dim)
    local.add(
        [real_corpus["ids"][i] for i in rows],
        real_corpus["vectors"][rows],
        payloads=[real_corpus["payloads"][i] for i in rows],
    )
    queries = real_corpus["queries"][:N_QUERIES]
    report = {}
    for name, spec in FILTERS.items():
        found = [
            [d.id for d in store.similarity_search_by_vector(q.tolist(), k=10, filter=spec)] for q in queries
        ]
        report[name] = recall(found, truth_ids(local, queries, spec))
    store.close()
    assert min(report.values()) >= 0.95, f"{backend}: {report}"


@pytest.mark.parametrize("backend", ["brute", "hnsw", "qdrant"])
def test_llamaindex_store_filtered_recall(
    backend: str, real_corpus: dict[str, Any], oracle: BruteForceIndex
) -> None:
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import (
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
    )
    from llama_index.vector_stores.kalm import KaLMVectorStore

    options = {"config": EDGE_GRAPH} if backend == "qdrant" else {}
    store = KaLMVectorStore(index=backend, index_options=options)
    store.add(
        [
            TextNode(id_=i, text=t, metadata=p, embedding=v.tolist())
            for i, t, p, v in zip(
                real_corpus["ids"],
                real_corpus["texts"],
                real_corpus["payloads"],
                real_corpus["vectors"],
                strict=True,
            )
        ]
    )
    queries = real_corpus["queries"][:N_QUERIES]
    report = {}
    for name, spec in FILTERS.items():
        ((key, value),) = spec.items()
        filters = MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=FilterOperator.EQ)])
        found = [
            store.query(
                VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=10, filters=filters)
            ).ids
            or []
            for q in queries
        ]
        report[name] = recall(found, truth_ids(oracle, queries, spec))
    store.close()
    assert min(report.values()) >= 0.95, f"{backend}: {report}"
