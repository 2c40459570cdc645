"""Metric plumbing and task-folder readers on hand-checkable inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from kalm_rag.errors import InvalidInputError
from kalm_rag.eval.datasets import (
    discover_tasks,
    load_bitext_task,
    load_sts_task,
    retrieval_splits,
    task_kind,
)
from kalm_rag.eval.metrics import (
    bitext_accuracy,
    bitext_accuracy_from_run,
    retrieval_metrics,
    spearman,
    top_k_run,
)


def test_top_k_run_keeps_the_best_documents_per_query() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    run = top_k_run(scores, ["q1", "q2"], ["a", "b", "c"], k=2)
    assert run == {"q1": pytest.approx({"b": 0.9, "c": 0.5}), "q2": pytest.approx({"a": 0.7, "c": 0.3})}
    assert set(top_k_run(scores, ["q1", "q2"], ["a", "b", "c"], k=10)["q1"]) == {"a", "b", "c"}


def test_retrieval_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    run = {"q1": {"a": 0.9, "b": 0.5}, "q2": {"b": 0.8, "c": 0.7, "a": 0.1}}
    values = retrieval_metrics(qrels, run)
    # q1: relevant at rank 1; q2: its only relevant document at rank 2
    assert values["ndcg@10"] == pytest.approx((1.0 + 1.0 / math.log2(3)) / 2, abs=1e-6)
    assert values["mrr@10"] == pytest.approx(0.75)
    assert values["recall@100"] == pytest.approx(1.0)


def test_a_query_missing_from_the_run_scores_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    values = retrieval_metrics(qrels, {"q1": {"a": 1.0}})
    assert values["ndcg@10"] == pytest.approx(0.5)
    assert values["recall@100"] == pytest.approx(0.5)


def test_graded_relevance_uses_the_gain_levels() -> None:
    qrels = {"q": {"a": 2, "b": 1}}
    ideal = retrieval_metrics(qrels, {"q": {"a": 2.0, "b": 1.0}})["ndcg@10"]
    swapped = retrieval_metrics(qrels, {"q": {"b": 2.0, "a": 1.0}})["ndcg@10"]
    assert ideal == pytest.approx(1.0)
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert swapped == pytest.approx(expected, abs=1e-6)


def test_bitext_accuracy_is_nearest_neighbour_from_the_first_side() -> None:
    # row 0 finds its translation; row 1 prefers column 0; row 2 finds its own
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.1, 0.3, 0.7]])
    assert bitext_accuracy(scores) == pytest.approx(2 / 3)
    assert bitext_accuracy(np.eye(4)) == pytest.approx(1.0)
    assert bitext_accuracy_from_run({"0": {"0": 3.0}, "1": {}}, 2) == pytest.approx(0.5)


def test_spearman_of_monotone_and_reversed_scores() -> None:
    gold = [0.1, 0.4, 0.2, 0.9]
    assert spearman([1.0, 3.0, 2.0, 10.0], gold) == pytest.approx(1.0)
    assert spearman([-1.0, -3.0, -2.0, -10.0], gold) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: top_k_run(np.zeros((2, 3)), ["q"], ["a", "b", "c"]), "shape"),
        (lambda: top_k_run(np.full((1, 1), np.nan), ["q"], ["a"]), "NaN"),
        (lambda: bitext_accuracy(np.zeros((2, 3))), "square"),
        (lambda: spearman([1.0, 2.0], [1.0]), "same length"),
        (lambda: retrieval_metrics({}, {}), "no judged"),
        (lambda: retrieval_metrics({"q": {"a": 1}}, {}, ["map"]), "unknown metric"),
    ],
)
def test_bad_inputs_are_named(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=message):
        call()


# -- task folder readers -----------------------------------------------------------------------
def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_task_folders_are_recognised_by_their_files(tmp_path: Path) -> None:
    retrieval, sts, bitext = tmp_path / "R", tmp_path / "S", tmp_path / "B"
    _write_jsonl(retrieval / "corpus.jsonl", [{"_id": "d", "text": "x"}])
    _write_jsonl(sts / "pairs.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 1}])
    _write_jsonl(bitext / "en-de" / "sentences1.jsonl", [{"text": "yes"}])
    _write_jsonl(bitext / "en-de" / "sentences2.jsonl", [{"text": "ja"}])
    (tmp_path / "notes").mkdir()
    assert [task_kind(p) for p in (retrieval, sts, bitext)] == ["retrieval", "sts", "bitext"]
    assert discover_tasks(tmp_path) == [bitext, retrieval, sts]
    assert discover_tasks(sts) == [sts]
    with pytest.raises(InvalidInputError, match="not a task folder"):
        task_kind(tmp_path / "notes")


def test_retrieval_splits_list_the_query_languages(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    for name in ("test", "test_de", "test_pt_BR"):
        (tmp_path / "qrels" / f"{name}.tsv").write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    assert retrieval_splits(tmp_path) == {"all": "test", "de": "test_de", "pt_BR": "test_pt_BR"}


def test_bitext_pairs_must_line_up(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "en-fr" / "sentences1.jsonl", [{"text": "one"}, {"text": "two"}])
    _write_jsonl(tmp_path / "en-fr" / "sentences2.jsonl", [{"text": "un"}, {"text": "deux"}])
    (pair,) = load_bitext_task(tmp_path)
    assert (pair.name, pair.languages, pair.sentences2) == ("en-fr", ("en", "fr"), ["un", "deux"])
    _write_jsonl(tmp_path / "en-fr" / "sentences2.jsonl", [{"text": "un"}])
    with pytest.raises(InvalidInputError, match="must be a pair"):
        load_bitext_task(tmp_path)


def test_sts_pairs_need_numeric_scores(tmp_path: Path) -> None:
    rows = [
        {"sentence1": "a", "sentence2": "b", "score": 0.5},
        {"sentence1": "c", "sentence2": "d", "score": 1},
    ]
    _write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert load_sts_task(tmp_path).scores == [0.5, 1.0]
    _write_jsonl(tmp_path / "pairs.jsonl", [*rows, {"sentence1": "e", "sentence2": "f", "score": "high"}])
    with pytest.raises(InvalidInputError, match="score must be a finite number"):
        load_sts_task(tmp_path)
