"""KaLMVectorStore for LlamaIndex: a real VectorStoreIndex over real text, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.embeddings.kalm import KaLMEmbedding
from llama_index.vector_stores.kalm import KaLMVectorStore

from kalm_rag.errors import ConfigError, InvalidInputError
from tests.integrations.conftest import RetrievalSample


@pytest.fixture(scope="module")
def embed_model(default_encoder: Any) -> KaLMEmbedding:
    return KaLMEmbedding(encoder=default_encoder)


def _documents(sample: RetrievalSample) -> list[Document]:
    return [
        Document(text=text, id_=doc_id, metadata={"package": doc_id.removeprefix("deb-"), "n": n})
        for n, (doc_id, text) in enumerate(sample.corpus.items())
    ]


@pytest.fixture(scope="module")
def built(
    embed_model: KaLMEmbedding, debian_sample: RetrievalSample
) -> Iterator[tuple[VectorStoreIndex, Any]]:
    store = KaLMVectorStore()
    context = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex.from_documents(
        _documents(debian_sample), storage_context=context, embed_model=embed_model
    )
    yield index, store
    store.close()


def _filters(*items: MetadataFilter | MetadataFilters, condition: str = "and") -> MetadataFilters:
    return MetadataFilters(filters=list(items), condition=FilterCondition(condition))


def test_retriever_and_query_engine_end_to_end(built: Any, debian_sample: RetrievalSample) -> None:
    index, store = built
    assert store.count() == len(debian_sample.corpus)  # each short document is one node
    retriever = index.as_retriever(similarity_top_k=5)
    found = 0
    for qid, query in debian_sample.queries.items():
        hits = retriever.retrieve(query)
        assert len(hits) == 5 and hits[0].score >= hits[-1].score
        found += bool({h.node.ref_doc_id for h in hits} & debian_sample.answers[qid])
    assert found / len(debian_sample.queries) >= 0.8

    query = next(iter(debian_sample.queries.values()))
    top = retriever.retrieve(query)[0]
    assert top.node.get_content() == debian_sample.corpus[top.node.ref_doc_id]
    assert top.node.metadata["package"] == top.node.ref_doc_id.removeprefix("deb-")

    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=2)
    response = engine.query(query)
    assert [n.node.node_id for n in response.source_nodes] == [
        h.node.node_id for h in retriever.retrieve(query)[:2]
    ]
    assert top.node.get_content()[:80] in str(response)  # MockLLM echoes the prompt with the context


async def test_async_retrieval_matches_sync(built: Any, debian_sample: RetrievalSample) -> None:
    index, _ = built
    retriever = index.as_retriever(similarity_top_k=3)
    query = list(debian_sample.queries.values())[1]
    sync_ids = [h.node.node_id for h in retriever.retrieve(query)]
    assert [h.node.node_id for h in await retriever.aretrieve(query)] == sync_ids


def test_metadata_filters_are_translated(built: Any, debian_sample: RetrievalSample) -> None:
    index, _ = built
    query = next(iter(debian_sample.queries.values()))
    gte10 = MetadataFilter(key="n", value=10, operator=FilterOperator.GTE)
    lt14 = MetadataFilter(key="n", value=14, operator=FilterOperator.LT)
    gt40 = MetadataFilter(key="n", value=40, operator=FilterOperator.GT)
    cases = {
        "range": (_filters(gte10, lt14), set(range(10, 14))),
        "in": (_filters(MetadataFilter(key="n", value=[1, 3, 5], operator=FilterOperator.IN)), {1, 3, 5}),
        "or": (
            _filters(MetadataFilter(key="n", value=2), _filters(gt40), condition="or"),
            {2, *range(41, 48)},
        ),
    }
    for name, (filters, expected) in cases.items():
        hits = index.as_retriever(similarity_top_k=50, filters=filters).retrieve(query)
        assert {h.node.metadata["n"] for h in hits} == expected, name
    with pytest.raises(InvalidInputError, match="'!=' on 'n' is not supported"):
        ne = _filters(MetadataFilter(key="n", value=1, operator=FilterOperator.NE))
        index.as_retriever(filters=ne).retrieve(query)


def test_doc_ids_node_ids_and_mmr(
    built: Any, embed_model: KaLMEmbedding, debian_sample: RetrievalSample
) -> None:
    _, store = built
    query = next(iter(debian_sample.queries.values()))
    vector = embed_model.get_query_embedding(query)
    doc_ids = list(debian_sample.corpus)[5:8]
    by_doc = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=10, doc_ids=doc_ids))
    assert {n.ref_doc_id for n in by_doc.nodes} == set(doc_ids)

    everything = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=48))
    subset = everything.ids[10:20]
    among = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=3, node_ids=subset))
    assert among.ids == subset[:3]  # the exact order among those nodes
    assert among.similarities == pytest.approx(everything.similarities[10:13], abs=1e-5)

    mmr = store.query(
        VectorStoreQuery(
            query_embedding=vector, similarity_top_k=4, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.3
        )
    )
    assert len(mmr.ids) == 4 and mmr.ids[0] == everything.ids[0] and set(mmr.ids) <= set(everything.ids)
    with pytest.raises(InvalidInputError, match="not supported"):
        store.query(VectorStoreQuery(query_embedding=vector, mode=VectorStoreQueryMode.SPARSE))


@pytest.mark.parametrize("backend", ["brute", "hnsw", "qdrant"])
def test_persistence_round_trip(backend: str, tmp_path: Path, embed_model: KaLMEmbedding) -> None:
    docs = [
        Document(text="apt installs and upgrades packages on Debian", id_="apt", metadata={"kind": "tool"}),
        Document(text="git records the history of source code", id_="git", metadata={"kind": "tool"}),
        Document(
            text="the weather will be sunny and warm tomorrow", id_="weather", metadata={"kind": "news"}
        ),
    ]
    store = KaLMVectorStore(backend)
    context = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex.from_documents(docs, storage_context=context, embed_model=embed_model)
    query = "version control history"
    before = [(h.node.node_id, h.score) for h in index.as_retriever(similarity_top_k=3).retrieve(query)]
    context.persist(persist_dir=str(tmp_path))
    store.close()

    reopened = KaLMVectorStore.from_persist_dir(tmp_path)
    try:
        loaded = load_index_from_storage(
            StorageContext.from_defaults(persist_dir=str(tmp_path), vector_store=reopened),
            embed_model=embed_model,
        )
        after = [(h.node.node_id, h.score) for h in loaded.as_retriever(similarity_top_k=3).retrieve(query)]
        assert [i for i, _ in after] == [i for i, _ in before]
        assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-5)
        assert after[0][0] in {n.node_id for n in reopened.get_nodes() if n.ref_doc_id == "git"}

        loaded.delete_ref_doc("git")  # removes the document's nodes from the reopened store
        assert "git" not in {n.ref_doc_id for n in reopened.get_nodes()}
        news = _filters(MetadataFilter(key="kind", value="news"))
        assert [n.ref_doc_id for n in reopened.get_nodes(filters=news)] == ["weather"]
        reopened.delete_nodes(filters=news)
        assert [n.ref_doc_id for n in reopened.get_nodes()] == ["apt"]
        reopened.clear()
        assert reopened.count() == 0 and reopened.get_nodes() == []
    finally:
        reopened.close()


def test_bad_input(embed_model: KaLMEmbedding, tmp_path: Path) -> None:
    store = KaLMVectorStore()
    with pytest.raises(ValueError, match="embedding not set"):
        store.add([TextNode(text="no vector")])
    with pytest.raises(InvalidInputError, match="reserved"):
        store.add([TextNode(text="x", metadata={"_kalm_text": "y"}, embedding=[0.1] * 384)])
    with pytest.raises(InvalidInputError, match="needs a query_embedding"):
        store.query(VectorStoreQuery(query_str="text only"))
    with pytest.raises(ConfigError, match="unknown index backend"):
        KaLMVectorStore("faiss")
    with pytest.raises(InvalidInputError, match="not a saved KaLMVectorStore"):
        KaLMVectorStore.from_persist_path(tmp_path)
    empty = store.query(
        VectorStoreQuery(query_embedding=embed_model.get_query_embedding("x"), similarity_top_k=2)
    )
    assert empty.ids == [] and empty.nodes == []
