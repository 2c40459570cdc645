"""KaLMVectorStore on real text: retrieval quality, filters, scores, MMR, persistence, retriever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_kalm import KaLMEmbeddings, KaLMVectorStore

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.filters import Field
from tests.integrations.conftest import RetrievalSample


def _metadata(doc_id: str, n: int) -> dict[str, Any]:
    return {"package": doc_id, "n": n, "group": "even" if n % 2 == 0 else "odd"}


@pytest.fixture(scope="module")
def minilm(default_encoder: Any) -> KaLMEmbeddings:
    return KaLMEmbeddings(encoder=default_encoder)


@pytest.fixture(scope="module")
def debian_store(minilm: KaLMEmbeddings, debian_sample: RetrievalSample) -> KaLMVectorStore:
    ids = list(debian_sample.corpus)
    store = KaLMVectorStore(minilm)
    store.add_texts(
        [debian_sample.corpus[i] for i in ids],
        metadatas=[_metadata(i, n) for n, i in enumerate(ids)],
        ids=ids,
    )
    return store


def test_retrieval_matches_the_exact_oracle_and_finds_answers(
    debian_store: KaLMVectorStore, debian_sample: RetrievalSample, default_encoder: Any
) -> None:
    ids = list(debian_sample.corpus)
    assert debian_store.index is not None
    stored = np.stack([item.vector for item in debian_store.index.get(ids)])  # type: ignore[union-attr]
    # the store holds exactly what the Python API computes for documents
    np.testing.assert_allclose(
        stored[:3], default_encoder.encode_document([debian_sample.corpus[i] for i in ids[:3]]), atol=1e-5
    )
    query_vectors = default_encoder.encode_query(list(debian_sample.queries.values()))  # one batch
    hits_at_5 = 0
    for (qid, query), query_vector in zip(debian_sample.queries.items(), query_vectors, strict=True):
        found = debian_store.similarity_search_with_score(query, k=5)
        scores = stored @ query_vector
        oracle = np.argsort(-scores)[:5]
        assert [doc.id for doc, _ in found] == [ids[i] for i in oracle]
        np.testing.assert_allclose([s for _, s in found], scores[oracle], atol=1e-5)
        assert found[0][0].page_content == debian_sample.corpus[ids[oracle[0]]]
        hits_at_5 += bool({doc.id for doc, _ in found} & debian_sample.answers[qid])
    # the packaged MiniLM reaches nDCG@10 0.91 on this task; most answers must be in the top 5
    assert hits_at_5 / len(debian_sample.queries) >= 0.8


@pytest.mark.parametrize("backend", ["hnsw", "qdrant"])
def test_ann_backends_agree_with_exact_search(
    backend: str, minilm: KaLMEmbeddings, debian_store: KaLMVectorStore, debian_sample: RetrievalSample
) -> None:
    ids = list(debian_sample.corpus)
    assert debian_store.index is not None
    items = [item for item in debian_store.index.get(ids) if item is not None]
    store = KaLMVectorStore(minilm, index=backend)
    try:
        assert store.index is not None
        # copy the vectors rather than encode the corpus again: the test is about the engines
        store.index.add(ids, np.stack([i.vector for i in items]), payloads=[i.payload for i in items])
        queries = minilm.client.encode_query(list(debian_sample.queries.values()))
        for vector in queries.tolist():
            for options in ({"k": 3}, {"k": 3, "filter": {"group": "even"}}):
                exact = debian_store.similarity_search_by_vector(vector, **options)
                assert store.similarity_search_by_vector(vector, **options) == exact
    finally:
        store.close()


def test_metadata_filters(debian_store: KaLMVectorStore, debian_sample: RetrievalSample) -> None:
    query = next(iter(debian_sample.queries.values()))
    even = debian_store.similarity_search(query, k=8, filter={"group": "even"})
    assert len(even) == 8 and all(d.metadata["group"] == "even" for d in even)
    ranged = debian_store.similarity_search(query, k=50, filter={"n": {"gte": 10, "lt": 20}})
    assert sorted(d.metadata["n"] for d in ranged) == list(range(10, 20))
    built = debian_store.similarity_search(query, k=50, filter=(Field("n") < 3) | (Field("n") == 7))
    assert sorted(d.metadata["n"] for d in built) == [0, 1, 2, 7]
    assert debian_store.similarity_search(query, k=3, filter={"group": "none"}) == []
    with pytest.raises(InvalidInputError, match="unknown operator"):
        debian_store.similarity_search(query, k=3, filter={"n": {"ne": 3}})


def test_relevance_scores_and_threshold_retriever(debian_store: KaLMVectorStore) -> None:
    query = "bash automated testing system"
    with_scores = debian_store.similarity_search_with_score(query, k=5)
    relevance = debian_store.similarity_search_with_relevance_scores(query, k=5)
    assert [d.id for d, _ in relevance] == [d.id for d, _ in with_scores]
    for (_, score), (_, rel) in zip(with_scores, relevance, strict=True):
        assert 0.0 <= rel <= 1.0 and rel == pytest.approx((1 + score) / 2, abs=1e-6)
    threshold = (relevance[0][1] + relevance[1][1]) / 2  # keeps exactly the best hit
    retriever = debian_store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": 5, "score_threshold": threshold}
    )
    assert [d.id for d in retriever.invoke(query)] == [relevance[0][0].id]


async def test_as_retriever_sync_and_async(debian_store: KaLMVectorStore) -> None:
    retriever = debian_store.as_retriever(search_kwargs={"k": 3, "filter": {"group": "odd"}})
    docs = retriever.invoke("command line tool")
    assert len(docs) == 3 and all(d.metadata["group"] == "odd" for d in docs)
    assert [d.id for d in await retriever.ainvoke("command line tool")] == [d.id for d in docs]


def test_mmr_skips_near_duplicates(minilm: KaLMEmbeddings) -> None:
    texts = [
        "apt installs and upgrades Debian packages",
        "apt installs and upgrades Debian packages.",  # a near-duplicate of the first
        "dpkg is the low-level tool that installs Debian package files",
        "the weather will be sunny tomorrow",
    ]
    store = KaLMVectorStore.from_texts(texts, minilm, ids=["a", "a2", "dpkg", "weather"])
    query = "apt installs and upgrades Debian packages"
    assert {d.id for d in store.similarity_search(query, k=2)} == {"a", "a2"}
    mmr = store.max_marginal_relevance_search(query, k=2, fetch_k=4, lambda_mult=0.3)
    assert mmr[0].id in ("a", "a2") and mmr[1].id not in ("a", "a2")
    mmr_retriever = store.as_retriever(
        search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4, "lambda_mult": 0.3}
    )
    assert [d.id for d in mmr_retriever.invoke(query)] == [d.id for d in mmr]


def test_queries_are_embedded_with_the_instruction(tiny_kalm_encoder: Any) -> None:
    store = KaLMVectorStore(KaLMEmbeddings(encoder=tiny_kalm_encoder))
    texts = ["install the linux kernel driver", "search the python library index"]
    store.add_texts(texts, ids=["kernel", "python"])
    query = "how to install a driver"
    q = tiny_kalm_encoder.encode_query([query])[0]  # "Instruct: ... \n Query: ..."
    d = tiny_kalm_encoder.encode(texts)
    by_id = dict(zip(["kernel", "python"], d @ q, strict=True))
    for doc, score in store.similarity_search_with_score(query, k=2):
        assert score == pytest.approx(float(by_id[doc.id]), abs=1e-5)


@pytest.mark.parametrize("backend", ["brute", "hnsw", "qdrant"])
def test_save_and_load_round_trip(backend: str, tmp_path: Path, default_encoder: Any) -> None:
    from kalm_rag import Retriever

    minilm = KaLMEmbeddings(encoder=default_encoder)
    store = KaLMVectorStore(minilm, index=backend)
    texts = ["apt installs packages", "git tracks source code", "ssh logs in to remote machines"]
    store.add_texts(texts, metadatas=[{"k": i} for i in range(3)], ids=["apt", "git", "ssh"])
    before = store.similarity_search_with_score("version control", k=3, filter={"k": {"gte": 1}})
    store.save(tmp_path / "store")
    store.close()

    loaded = KaLMVectorStore.load(tmp_path / "store")  # the model is named in the folder
    try:
        assert loaded.embeddings.client is default_encoder  # reused, not loaded again
        after = loaded.similarity_search_with_score("version control", k=3, filter={"k": {"gte": 1}})
        assert [d for d, _ in after] == [d for d, _ in before]
        np.testing.assert_allclose([s for _, s in after], [s for _, s in before], atol=1e-5)
        assert loaded.get_by_ids(["ssh"]) == [Document(id="ssh", page_content=texts[2], metadata={"k": 2})]
    finally:
        loaded.close()

    # the folder is also a saved kalm_rag.Retriever (what `kalm-rag serve --index` opens)
    retriever = Retriever.load(tmp_path / "store", encoder=default_encoder)
    chunks = retriever.search("version control", k=3, filter={"k": {"gte": 1}})
    assert [(c.id, c.text) for c in chunks] == [(d.id, d.page_content) for d, _ in before]


def test_save_with_a_foreign_embedding_needs_it_back(tmp_path: Path) -> None:
    fake = DeterministicFakeEmbedding(size=8)
    store = KaLMVectorStore.from_texts(["one", "two"], fake, ids=["1", "2"])
    store.save(tmp_path / "s")
    assert not (tmp_path / "s" / "retriever.json").exists()
    with pytest.raises(InvalidInputError, match="pass embedding="):
        KaLMVectorStore.load(tmp_path / "s")
    loaded = KaLMVectorStore.load(tmp_path / "s", embedding=fake)
    assert [d.id for d in loaded.similarity_search("two", k=1)] == ["2"]
    with pytest.raises(InvalidInputError, match="not a saved KaLMVectorStore"):
        KaLMVectorStore.load(tmp_path)


def test_bad_input_is_rejected(minilm: KaLMEmbeddings) -> None:
    store = KaLMVectorStore(minilm)
    with pytest.raises(InvalidInputError, match="reserved"):
        store.add_texts(["x"], metadatas=[{"_kalm_text": "y"}])
    with pytest.raises(InvalidInputError, match="2 texts but 1 ids"):
        store.add_texts(["x", "y"], ids=["1"])
    with pytest.raises(InvalidInputError, match="duplicate ids"):
        store.add_texts(["x", "y"], ids=["1", "1"])
    with pytest.raises(InvalidInputError, match="unsupported keyword"):
        store.similarity_search("x", k=1, where={"a": 1})
    with pytest.raises(InvalidInputError, match="needs the ids"):
        store.delete()
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        store.similarity_search("x", k=0)
    with pytest.raises(ConfigError, match="unknown index backend"):
        KaLMVectorStore(minilm, index="faiss")
    assert store.count() == 0
