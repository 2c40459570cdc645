"""A persisted BM25 keyword index over texts keyed by the same string ids as the vector indexes.

Scoring is bm25s (Okapi BM25, Lucene's idf by default, k1=1.5, b=0.75). Tokenisation is ours
and language-neutral: NFKC, case-folded word tokens, and CJK scripts (Han, kana, Hangul) split
into single characters, since they are written without spaces between words. Hybrid search
fuses these hits with dense hits via ``kalm_rag.index.fusion.reciprocal_rank_fusion``.

bm25s builds a static index, so changes mark it stale and the next search rebuilds it from the
stored tokens; a save stores ids, texts and payloads, and a load rebuilds on first search.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kalm_rag.errors import ConfigError, InvalidInputError, require
from kalm_rag.index.base import IndexContext, PathType, Payload, SearchHit, make_hit
from kalm_rag.index.filters import Filter, parse_filter
from kalm_rag.index.payload_index import CachedPayloadMasks
from kalm_rag.index.rwlock import ReadWriteLock
from kalm_rag.index.storage import (
    check_backend,
    config_from,
    read_json,
    read_manifest,
    read_records,
    save_index_dir,
    write_json,
    write_records,
)
from kalm_rag.index.validation import check_ids, check_k, check_payloads, detached

# Hangul jamo, kana, CJK unified ideographs (+ extension A), compatibility ideographs, Hangul syllables
_CJK = "\u1100-\u11ff\u3040-\u30ff\u3131-\u318e\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; each CJK character is its own token."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


class BM25Index(IndexContext):
    """Keyword search with BM25; upserts, deletes, payload filters and atomic save/load."""

    backend = "bm25"

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, method: str = "lucene") -> None:
        if isinstance(k1, bool) or not isinstance(k1, int | float) or k1 < 0:
            raise ConfigError(f"k1 must be a non-negative number, got {k1!r}")
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 1:
            raise ConfigError(f"b must be a number in [0, 1], got {b!r}")
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.k1, self.b, self.method = float(k1), float(b), method
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._texts: list[str] = []
        self._tokens: list[list[str]] = []
        self._payloads: list[Payload | None] = []
        self._masks = CachedPayloadMasks()
        self._engine: Any = None  # bm25s.BM25 over the current rows; None when stale
        self._lock = ReadWriteLock()
        self._build_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"BM25Index(size={len(self)}, k1={self.k1}, b={self.b}, method={self.method!r})"

    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        *,
        payloads: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Insert or replace documents (upsert, as in the vector indexes)."""
        id_list = check_ids(ids)
        text_list = _check_texts(texts, "texts")
        if len(text_list) != len(id_list):
            raise InvalidInputError(f"got {len(id_list)} ids but {len(text_list)} texts")
        stored = check_payloads(payloads, len(id_list))
        tokens = [tokenize(t) for t in text_list]
        with self._lock.write():
            for item_id, text, toks, payload in zip(id_list, text_list, tokens, stored, strict=True):
                row = self._rows.get(item_id)
                if row is None:
                    self._rows[item_id] = len(self._ids)
                    self._ids.append(item_id)
                    self._texts.append(text)
                    self._tokens.append(toks)
                    self._payloads.append(payload)
                else:
                    self._texts[row], self._tokens[row], self._payloads[row] = text, toks, payload
            self._engine = None

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents; unknown ids are ignored. Returns the number removed."""
        id_list = check_ids(ids, unique=False)
        with self._lock.write():
            gone = {self._rows[i] for i in id_list if i in self._rows}
            if gone:
                keep = [r for r in range(len(self._ids)) if r not in gone]
                self._ids = [self._ids[r] for r in keep]
                self._texts = [self._texts[r] for r in keep]
                self._tokens = [self._tokens[r] for r in keep]
                self._payloads = [self._payloads[r] for r in keep]
                self._rows = {item_id: row for row, item_id in enumerate(self._ids)}
                self._engine = None
            return len(gone)

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        with self._lock.read():
            return list(self._ids)

    def get(self, ids: Sequence[str]) -> list[str | None]:
        """The stored text per id, ``None`` for unknown ids."""
        id_list = check_ids(ids, unique=False)
        with self._lock.read():
            return [self._texts[self._rows[i]] if i in self._rows else None for i in id_list]

    def search(
        self,
        queries: str | Sequence[str],
        *,
        k: int = 10,
        filter: Filter | Mapping[str, Any] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` documents per query, best first; documents sharing no term are left out."""
        k = check_k(k)
        query_list = [queries] if isinstance(queries, str) else _check_texts(queries, "queries")
        node = parse_filter(filter)
        with self._lock.read():
            n = len(self._ids)
            if not n:
                return [[] for _ in query_list]
            engine = self._current_engine()
            mask = None
            if node is not None:
                # rebuilt with the engine after writes: the engine object marks the version
                mask = self._masks.allowed(engine, self._payloads, node, n).astype(np.float32)
            out: list[list[SearchHit]] = []
            for query in query_list:
                tokens = tokenize(query)
                if not tokens:
                    out.append([])
                    continue
                rows, scores = engine.retrieve(
                    [tokens], k=min(k, n), show_progress=False, n_threads=0, weight_mask=mask
                )
                out.append(
                    [
                        make_hit(self._ids[r], float(s), detached(self._payloads[r]))
                        for r, s in zip(rows[0].tolist(), scores[0].tolist(), strict=True)
                        if s > 0  # zero means no shared term (or filtered out)
                    ]
                )
            return out

    def _current_engine(self) -> Any:
        # Called under the read lock: rows cannot change, so one rebuild serves every reader.
        with self._build_lock:
            if self._engine is None:
                bm25s = require("bm25s", "index")
                engine = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
                engine.index(self._tokens, show_progress=False)
                self._engine = engine
            return self._engine

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: PathType) -> None:
        with self._lock.read():
            manifest = {
                "backend": self.backend,
                "count": len(self._ids),
                "config": {"k1": self.k1, "b": self.b, "method": self.method},
            }

            def write(folder: Path) -> None:
                write_records(folder, self._ids, self._payloads)
                write_json(folder / "texts.json", self._texts)

            save_index_dir(path, manifest, write)

    @classmethod
    def load(cls, path: PathType) -> BM25Index:
        manifest, folder = read_manifest(path)
        check_backend(manifest, cls.backend, path)
        index = config_from(cls, manifest, path)
        count = int(manifest["count"])
        ids, payloads = read_records(folder, count)
        texts = read_json(folder / "texts.json")
        if not isinstance(texts, list) or len(texts) != count or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError(f"index data in {folder} is damaged: texts.json does not match")
        index._ids, index._texts, index._payloads = ids, texts, payloads
        index._tokens = [tokenize(t) for t in texts]
        index._rows = {item_id: row for row, item_id in enumerate(ids)}
        return index


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str | bytes):
        raise InvalidInputError(
            f"{what} must be a sequence of strings, not a single string: wrap it in a list"
        )
    items = list(texts)
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"{what} must be strings; not a string at positions {bad[:5]}")
    from kalm_rag.texts import check_unicode

    for i, text in enumerate(items):
        check_unicode(text, f"{what}[{i}]")
    return items
