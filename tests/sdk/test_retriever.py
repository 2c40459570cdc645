"""Retriever on the real packaged model and real Debian descriptions, across index backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kalm_rag import ConfigError, Encoder, InvalidInputError, Retriever
from kalm_rag.chunking import ChunkerConfig, token_windows
from kalm_rag.retriever import Document, RetrieverConfig


@pytest.fixture(scope="module")
def debian(dev_data: Path) -> dict[str, Any]:
    """120 real package descriptions and the English short descriptions that find them."""
    task = dev_data / "DebianDescRetrieval"
    docs = [json.loads(line) for line in (task / "corpus.jsonl").read_text().splitlines()[:120]]
    doc_ids = {d["_id"] for d in docs}
    qrels = {}
    for line in (task / "qrels" / "test_en.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        if did in doc_ids:
            qrels[qid] = did
    queries = {}
    for line in (task / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        if q["_id"] in qrels:
            queries[q["_id"]] = q["text"]
    return {"docs": docs, "queries": queries, "qrels": qrels}


def _make_index(backend: str, dim: int) -> Any:
    from kalm_rag import BruteForceIndex, HnswIndex, QdrantIndex

    if backend == "brute":
        return BruteForceIndex(dim)
    if backend == "hnsw":
        return HnswIndex(dim)
    return QdrantIndex(dim)


@pytest.fixture(scope="module")
def filled(default_encoder: Encoder, debian: dict[str, Any]) -> Retriever:
    retriever = Retriever(default_encoder)
    retriever.add_texts(
        [d["text"] for d in debian["docs"]],
        ids=[d["_id"] for d in debian["docs"]],
        metadatas=[{"initial": d["_id"][4]} for d in debian["docs"]],
    )
    return retriever


def test_finds_the_described_package(filled: Retriever, debian: dict[str, Any]) -> None:
    assert len(debian["queries"]) >= 5
    top1 = [filled.search(text, k=1)[0].id == debian["qrels"][qid] for qid, text in debian["queries"].items()]
    assert sum(top1) / len(top1) >= 0.6
    hit = filled.search(next(iter(debian["queries"].values())), k=3)[0]
    assert hit.text and "initial" in hit.metadata and "_kalm_text" not in hit.metadata


def test_filter_restricts_hits(filled: Retriever) -> None:
    hits = filled.search("a library for parsing files", k=10, filter={"initial": "l"})
    assert hits and all(h.metadata["initial"] == "l" for h in hits)


def test_hybrid_search_brings_in_exact_keyword_matches(default_encoder: Encoder) -> None:
    retriever = Retriever(default_encoder)
    texts = [
        "Tool to convert images between formats",
        "Library for reading zstd compressed archives quickly",
        "Utility xq7frobnicate for terminal sessions",
        "Collection of fonts for the desktop",
    ]
    retriever.add_texts(texts, ids=["img", "zstd", "frob", "fonts"])
    hybrid = retriever.search("xq7frobnicate", k=2, hybrid=True)
    assert hybrid[0].id == "frob" and hybrid[0].text == texts[2]
    assert all(h.score > 0 for h in hybrid)


@pytest.mark.parametrize("backend", ["brute", "hnsw", "qdrant"])
def test_save_and_load_round_trip(
    backend: str, default_encoder: Encoder, debian: dict[str, Any], tmp_path: Path
) -> None:
    retriever = Retriever(default_encoder, _make_index(backend, default_encoder.dim))
    docs = debian["docs"][:40]
    retriever.add_texts([d["text"] for d in docs], ids=[d["_id"] for d in docs])
    query = "command line tool"
    before = retriever.search(query, k=5, hybrid=True)
    retriever.save(tmp_path / "r")
    loaded = Retriever.load(tmp_path / "r", encoder=default_encoder)
    after = loaded.search(query, k=5, hybrid=True)
    assert [h.id for h in after] == [h.id for h in before]
    assert [h.text for h in after] == [h.text for h in before]
    assert len(loaded) == 40


def test_load_by_model_name(default_encoder: Encoder, tmp_path: Path) -> None:
    retriever = Retriever(default_encoder)
    retriever.add_texts(["a kernel driver for network cards"], ids=["k"])
    retriever.save(tmp_path / "r")
    loaded = Retriever.load(tmp_path / "r")  # loads all-MiniLM-L6-v2 by the name saved in the folder
    assert loaded.encoder.name_or_path == "all-MiniLM-L6-v2"
    assert loaded.search("network driver", k=1)[0].id == "k"


def test_documents_are_chunked_with_overlap(default_encoder: Encoder) -> None:
    retriever = Retriever(default_encoder, config=RetrieverConfig(chunk_tokens=16, chunk_overlap=4))
    long_text = " ".join(f"word{i}" for i in range(60))
    ids = retriever.add_documents(
        [Document(long_text, id="doc", metadata={"lang": "en"}), {"text": "short one"}]
    )
    assert ids[0] == "doc#0" and len(ids) >= 4
    hit = retriever.search("word30", k=1)[0]
    assert hit.metadata["doc_id"] == "doc" and hit.metadata["lang"] == "en"


def test_token_windows_overlap_and_cover() -> None:
    windows = token_windows(10, ChunkerConfig(chunk_tokens=8, overlap=4))
    assert windows == [(0, 8), (4, 10)]
    assert token_windows(5, ChunkerConfig(chunk_tokens=8, overlap=2)) == [(0, 5)]
    with pytest.raises(ConfigError, match="overlap"):
        ChunkerConfig(chunk_tokens=8, overlap=8)


def test_bad_input(default_encoder: Encoder, tmp_path: Path) -> None:
    from kalm_rag import BruteForceIndex

    retriever = Retriever(default_encoder)
    with pytest.raises(InvalidInputError, match="query"):
        retriever.search("  ")
    with pytest.raises(InvalidInputError, match="ids"):
        retriever.add_texts(["a", "b"], ids=["1"])
    with pytest.raises(InvalidInputError, match="reserved"):
        retriever.add_texts(["a"], metadatas=[{"_kalm_text": "x"}])
    with pytest.raises(InvalidInputError, match="texts\\[0\\]"):
        retriever.add_texts([""])
    with pytest.raises(ConfigError, match="dim"):
        Retriever(default_encoder, BruteForceIndex(8))
    with pytest.raises(InvalidInputError, match="not a saved retriever"):
        Retriever.load(tmp_path)
