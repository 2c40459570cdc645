"""Smoke runs of the benchmark scripts on tiny folders and a tiny model: they run and write results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.bench
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

WORDS = "python library search kernel driver debian package server network file".split()


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-tasks")
    docs = {f"d{i}": f"the {WORDS[i]} tool" for i in range(10)}
    _jsonl(root / "Ret" / "corpus.jsonl", [{"_id": k, "text": v} for k, v in docs.items()])
    _jsonl(root / "Ret" / "queries.jsonl", [{"_id": f"en-{i}", "text": WORDS[i]} for i in range(4)])
    (root / "Ret" / "qrels").mkdir()
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"en-{i}\td{i}\t1\n" for i in range(4))
    for name in ("test", "test_en"):
        (root / "Ret" / "qrels" / f"{name}.tsv").write_text(qrels, encoding="utf-8")
    _jsonl(root / "Bit" / "en-de" / "sentences1.jsonl", [{"text": w} for w in WORDS[:5]])
    _jsonl(root / "Bit" / "en-de" / "sentences2.jsonl", [{"text": w + " file"} for w in WORDS[:5]])
    pairs = [{"sentence1": WORDS[i], "sentence2": WORDS[(i * 3) % 10], "score": i / 10} for i in range(6)]
    _jsonl(root / "Sts" / "pairs.jsonl", pairs)
    return root


def test_bench_retrieval_writes_tables_and_plots(
    tiny_bert_dir: Path, tiny_tasks: Path, tmp_path: Path
) -> None:
    import bench_retrieval

    args = ["--models", str(tiny_bert_dir), "bm25", "--tasks-dir", str(tiny_tasks), "--out", str(tmp_path)]
    assert bench_retrieval.main(args) == 0
    payload = json.loads((tmp_path / "retrieval.json").read_text())
    seen = {(r["model"], r["task"], r["metric"]) for r in payload["records"]}
    assert ("BM25", "Ret", "ndcg@10") in seen and (tiny_bert_dir.name, "Sts", "spearman") in seen
    bm25_en = next(
        r
        for r in payload["records"]
        if r["model"] == "BM25" and r["language"] == "en" and r["metric"] == "ndcg@10"
    )
    assert bm25_en["value"] == pytest.approx(1.0)  # each query word is in exactly one document
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "retrieval_Ret.png",
        "retrieval_Bit.png",
        "retrieval_Sts.png",
    }
    assert "## Ret (retrieval)" in (tmp_path / "retrieval.md").read_text()


def test_run_mteb_files_results_under_the_model(
    tiny_bert_dir: Path, tiny_tasks: Path, tmp_path: Path
) -> None:
    import run_mteb

    tasks = [str(tiny_tasks / "Sts"), "Bit"]  # a path, and a folder name under --tasks-dir
    args = [
        "--models",
        str(tiny_bert_dir),
        "--tasks",
        *tasks,
        "--tasks-dir",
        str(tiny_tasks),
        "--out",
        str(tmp_path),
    ]
    assert run_mteb.main(args) == 0
    rows = json.loads((tmp_path / "mteb.json").read_text())["rows"]
    assert {(r["task"], r["subset"]) for r in rows} == {("Sts", "default"), ("Bit", "en-de")}
    assert all(r["model"] == f"local/{tiny_bert_dir.name}" for r in rows)
    assert (tmp_path / "mteb.png").is_file()
    assert list((tmp_path / "mteb" / "results").glob(f"local__{tiny_bert_dir.name}/sha256-*/Sts.json"))


def test_bench_encode_compares_with_sentence_transformers(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import bench_encode

    texts = tmp_path / "texts.jsonl"
    _jsonl(texts, [{"text": " ".join(WORDS[: 1 + i % 9])} for i in range(24)])
    args = ["--models", str(tiny_bert_dir), "--texts", str(texts), "--n", "24", "--rounds", "2",
            "--dtypes", "float32", "--batch-size", "8", "--out", str(tmp_path / "out")]  # fmt: skip
    assert bench_encode.main(args) == 0
    (result,) = json.loads((tmp_path / "out" / "encode.json").read_text())["results"]
    assert result["n_texts"] == 24 and result["speedup_wall"] > 0
    assert result["cosine_vs_st"]["min"] > 0.99999  # same model, same vectors
    assert len(result["kalm_rag"]["wall_s"]) == 2 and (tmp_path / "out" / "encode.png").is_file()
