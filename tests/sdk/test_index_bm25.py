"""BM25 keyword index and reciprocal rank fusion (the pieces of hybrid search)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import SearchHit
from kalm_rag.index.bm25 import BM25Index, tokenize
from kalm_rag.index.fusion import reciprocal_rank_fusion


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World! GNU/Linux 2.6", ["hello", "world", "gnu", "linux", "2", "6"]),
        ("Linux内核模块", ["linux", "内", "核", "模", "块"]),
        ("ファイルを開く", ["フ", "ァ", "イ", "ル", "を", "開", "く"]),
        ("파일 열기", ["파", "일", "열", "기"]),
        ("Straße ÉCOLE naïve", ["strasse", "école", "naïve"]),
        ("ｆｕｌｌｗｉｄｔｈ ＡＢＣ", ["fullwidth", "abc"]),
        ("Привет, мир", ["привет", "мир"]),
        ("", []),
    ],
)
def test_tokenize_is_multilingual(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


def test_search_upsert_delete_and_filters() -> None:
    index = BM25Index()
    index.add(
        ["ls", "cp", "zh"],
        ["list directory contents", "copy files and directories", "复制文件和目录"],
        payloads=[{"section": 1}, {"section": 1}, {"section": 1, "lang": "zh"}],
    )
    hits = index.search(["copy files"], k=5)[0]
    assert [h.id for h in hits] == ["cp"] and hits[0].score > 0 and hits[0].payload == {"section": 1}
    assert [h.id for h in index.search("复制", k=5)[0]] == ["zh"]
    assert index.search(["nothing matches"], k=5) == [[]]
    assert index.search([""], k=5) == [[]]
    assert [h.id for h in index.search(["directory directories"], k=5, filter={"lang": "zh"})[0]] == []

    index.add(["ls"], ["copy everything everywhere"])  # upsert replaces the text
    assert {h.id for h in index.search(["copy"], k=5)[0]} == {"ls", "cp"}
    assert index.get(["ls", "nope"]) == ["copy everything everywhere", None]
    assert index.delete(["cp", "nope"]) == 1 and len(index) == 2
    assert [h.id for h in index.search(["copy"], k=5)[0]] == ["ls"]


def test_save_load_round_trip(tmp_path: Path) -> None:
    index = BM25Index(k1=1.2, b=0.5)
    index.add(["a", "b"], ["alpha beta", "beta gamma"], payloads=[None, {"x": 1}])
    before = index.search(["beta gamma"], k=2)
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert (loaded.k1, loaded.b, len(loaded)) == (1.2, 0.5, 2)
    assert loaded.search(["beta gamma"], k=2) == before


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="b must be a number in"):
        BM25Index(b=2)
    index = BM25Index()
    with pytest.raises(InvalidInputError, match="got 2 ids but 1 texts"):
        index.add(["a", "b"], ["x"])
    with pytest.raises(InvalidInputError, match="not a single string"):
        index.add(["a"], "x")
    with pytest.raises(InvalidInputError, match="duplicate ids"):
        index.add(["a", "a"], ["x", "y"])
    with pytest.raises(InvalidInputError, match="must be strings"):
        index.search([None])  # type: ignore[list-item]


def test_debian_english_ndcg_matches_the_published_baseline(dev_data: Path) -> None:
    """Real data: Okapi BM25 on Debian descriptions scores nDCG@10 0.885 in the dev README."""
    folder = dev_data / "DebianDescRetrieval"
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text("utf-8").splitlines()]
    queries = {
        q["_id"]: q["text"]
        for q in map(json.loads, (folder / "queries.jsonl").read_text("utf-8").splitlines())
    }
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test_en.tsv").read_text("utf-8").splitlines()[1:]:
        qid, cid, score = line.rstrip("\n").split("\t")
        qrels.setdefault(qid, {})[cid] = int(score)
    index = BM25Index()
    index.add([c["_id"] for c in corpus], [f"{c['title']} {c['text']}".strip() for c in corpus])
    qids = list(qrels)
    ndcg = []
    for qid, hits in zip(qids, index.search([queries[q] for q in qids], k=10), strict=True):
        dcg = sum(qrels[qid].get(h.id, 0) / math.log2(rank + 2) for rank, h in enumerate(hits))
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(10, len(qrels[qid]))))
        ndcg.append(dcg / ideal)
    assert sum(ndcg) / len(ndcg) == pytest.approx(0.885, abs=0.01)


def test_reciprocal_rank_fusion() -> None:
    dense = [SearchHit("a", 0.9, {"src": "dense"}), SearchHit("b", 0.8), SearchHit("c", 0.1)]
    sparse = ["c", "a", "d"]
    fused = reciprocal_rank_fusion([dense, sparse], k=60)
    assert [h.id for h in fused] == ["a", "c", "b", "d"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[0].payload == {"src": "dense"} and fused[3].payload is None
    # weights, limit, duplicates within one ranking, and ties in first-seen order
    weighted = reciprocal_rank_fusion([["x", "y"], ["y", "x"]], k=0, weights=[1.0, 3.0], limit=1)
    assert [h.id for h in weighted] == ["y"] and weighted[0].score == pytest.approx(0.5 + 3.0)
    assert [h.id for h in reciprocal_rank_fusion([["p", "p", "q"], ["q", "p"]])] == ["p", "q"]
    assert [h.id for h in reciprocal_rank_fusion([["p"], ["q"]])] == ["p", "q"]
    assert reciprocal_rank_fusion([]) == []
    with pytest.raises(InvalidInputError, match="2 rankings but 1 weights"):
        reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0])
    with pytest.raises(InvalidInputError, match="k must be a non-negative"):
        reciprocal_rank_fusion([["a"]], k=-1)
