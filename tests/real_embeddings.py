"""Real embeddings for index tests: the packaged model on the shared dev corpora.

Random vectors say little about HNSW or filtered-search quality, so recall tests use ~6k real
texts (Debian package descriptions, man pages, gettext messages in 13 languages) and 300 real
queries, embedded once and cached in pytest's cache folder (keyed by model and texts; the same
file as test_index_recall.py uses). Payloads carry real categories (``source``, ``lang``) and
seeded synthetic ones at known selectivities (``half`` 50%, ``tenant`` 10%, ``bucket`` 1%,
``day`` 0..999 for ranges).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MAX_LENGTH = 64
N_QUERIES = 300


def _read(file: Path) -> list[dict[str, Any]]:
    with open(file, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def load_real_corpus(dev_data: Path, config: pytest.Config) -> dict[str, Any]:
    """ids, texts, payloads, vectors (n x 384, unit length) and query vectors (300 x 384)."""
    docs: list[tuple[str, str, str, str]] = []  # (id, text, source, lang)
    for task in ("DebianDescRetrieval", "ManPageRetrieval"):
        docs += [
            (d["_id"], f"{d['title']} {d['text']}".strip(), task, "en")
            for d in _read(dev_data / task / "corpus.jsonl")
        ]
    for pair in sorted((dev_data / "GettextBitextMining").glob("en-*")):
        for name in ("sentences1.jsonl", "sentences2.jsonl"):
            lang = "en" if name == "sentences1.jsonl" else pair.name.split("-", 1)[1]
            docs += [
                (f"{pair.name}/{name}/{s['id']}", s["text"], "gettext", lang) for s in _read(pair / name)
            ]
    queries = [
        q["text"]
        for task in ("DebianDescRetrieval", "ManPageRetrieval")
        for q in _read(dev_data / task / "queries.jsonl")
    ]
    queries = queries[:: max(1, len(queries) // N_QUERIES)][:N_QUERIES]
    texts = [d[1] for d in docs] + queries

    # float32 is pinned below and part of the key: a cache written in bf16 is never reused
    spec = json.dumps(["all-MiniLM-L6-v2", MAX_LENGTH, "float32", texts])
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    cache = config.cache.mkdir("kalm-index-embeddings") / f"{key}.npy"
    if cache.exists():
        embeddings = np.load(cache)
    else:
        from kalm_rag import Encoder

        encoder = Encoder.from_pretrained(max_length=MAX_LENGTH, dtype="float32")
        embeddings = encoder.encode(texts, batch_size=32)
        np.save(cache, embeddings)
    rng = np.random.default_rng(14)
    n = len(docs)
    half, tenant, bucket, day = (rng.integers(0, m, n) for m in (2, 10, 100, 1000))
    payloads = [
        {
            "source": d[2],
            "lang": d[3],
            "half": int(half[i]),
            "tenant": int(tenant[i]),
            "bucket": int(bucket[i]),
            "day": int(day[i]),
        }
        for i, d in enumerate(docs)
    ]
    return {
        "ids": [d[0] for d in docs],
        "texts": [d[1] for d in docs],
        "payloads": payloads,
        "vectors": np.asarray(embeddings[:n], np.float32),
        "queries": np.asarray(embeddings[n:], np.float32),
        "query_texts": queries,
    }


# Filters at several selectivities on ~6.1k items: synthetic ones independent of the text,
# and real categories that correlate with it (the queries are English Debian / man page ones,
# so "German gettext messages" holds few of their neighbours: the hard case for post-filtering).
FILTERS: dict[str, dict[str, Any]] = {
    "50%": {"half": 1},
    "30% range": {"day": {"gte": 100, "lt": 400}},
    "10%": {"tenant": 3},
    "1%": {"bucket": 7},
    "0.2% and": {"tenant": 3, "day": {"lt": 20}},
    "78% real": {"source": "gettext"},
    "3% real lang": {"lang": "de"},
    "or real": {"$or": [{"source": "ManPageRetrieval"}, {"lang": "ja"}]},
}
