"""Per-line instruction, task type, label and negatives: kept by every data step, formatted by
the collator exactly as the SDK formats them at inference, per task type and model kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kalm_trainer.collate import EmbeddingCollator, label_id, passage_prefix, query_prefix
from kalm_trainer.data.convert import ConvertPairsConfig, pair_to_example, run_convert_step
from kalm_trainer.data.jsonl import read_examples
from kalm_trainer.data.labelling import label_examples
from kalm_trainer.data.mining import mine_hard_negatives
from kalm_trainer.data.schema import TaskType, TrainingExample, example_from_dict, example_to_dict
from kalm_trainer.teacher import add_teacher_scores

from kalm_rag import Encoder
from kalm_rag.config import ModelConfig
from kalm_rag.errors import InvalidInputError
from kalm_rag.instructions import KALM_TEMPLATE
from kalm_rag.loading import load_tokenizer
from kalm_rag.registry import REGISTRY

KALM = ModelConfig(instruction_template=KALM_TEMPLATE)
E5 = REGISTRY["multilingual-e5-small"].config
SYMMETRIC = ("sts", "pair_classification", "bitext", "classification", "clustering")
ASYMMETRIC = ("retrieval", "reranking")


def sides(config: ModelConfig, task_type: str, instruction: str = "Do X") -> tuple[str, str]:
    ex = TrainingExample("the query", ("the doc",), task_type=TaskType(task_type), instruction=instruction)
    return query_prefix(config, ex) + ex.query, passage_prefix(config, ex) + ex.positives[0]


@pytest.mark.parametrize("task_type", ASYMMETRIC)
def test_asymmetric_text_per_side(task_type: str) -> None:
    assert sides(KALM, task_type) == ("Instruct: Do X \n Query: the query", "the doc")
    assert sides(E5, task_type) == ("query: the query", "passage: the doc")


@pytest.mark.parametrize("task_type", SYMMETRIC)
def test_symmetric_text_per_side(task_type: str) -> None:
    assert sides(KALM, task_type) == (
        "Instruct: Do X \n Query: the query",
        "Instruct: Do X \n Query: the doc",
    )
    # e5's model card: "query: " on both sides for symmetric tasks; no instruction
    assert sides(E5, task_type) == ("query: the query", "query: the doc")


def test_training_text_is_the_sdk_text() -> None:
    for task_type in (*ASYMMETRIC, *SYMMETRIC):
        ex = TrainingExample("q", ("p",), task_type=TaskType(task_type), instruction="Do X")
        assert query_prefix(KALM, ex) == KALM.query_prefix(instruction="Do X", task=task_type)
        assert passage_prefix(KALM, ex) == KALM.document_prefix(instruction="Do X", task=task_type)
        assert query_prefix(E5, ex) == E5.query_prefix(task=task_type)
        assert passage_prefix(E5, ex) == E5.document_prefix(task=task_type)
    # no per-line instruction: the task type's default, on both sides when symmetric
    plain = TrainingExample("q", ("p",), task_type=TaskType.CLUSTERING)
    default = "Instruct: Identify the topic or theme of the given text \n Query: "
    assert query_prefix(KALM, plain) == passage_prefix(KALM, plain) == default


def test_collator_tokens_carry_the_per_line_texts(tiny_qwen2_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_qwen2_dir)
    examples = [
        TrainingExample("a cat", ("a kitten",), task="sts-t", task_type=TaskType.STS, instruction="Same?"),
        TrainingExample("find docs", ("the docs",), task="ret", instruction="Find it"),
    ]
    batch = EmbeddingCollator(tokenizer, KALM)(examples)

    def decoded(side: str) -> list[str]:
        ids, mask = batch[side]["input_ids"], batch[side]["attention_mask"]
        return [tokenizer.decode(row[m.bool()]) for row, m in zip(ids, mask, strict=True)]

    assert decoded("query") == ["Instruct: Same? \n Query: a cat", "Instruct: Find it \n Query: find docs"]
    assert decoded("passage") == ["Instruct: Same? \n Query: a kitten", "the docs"]


def test_convert_keeps_the_line_fields(tmp_path: Path) -> None:
    lines = [
        {"query": "q1", "positive": "p1", "task": "t", "lang": "de"},
        {
            "query": "2+2",
            "positive": "4",
            "negatives": ["5"],
            "negative_labels": ["five"],
            "task": "t2",
            "task_type": "sts",
            "instruction": "Same meaning?",
            "label": 4,
        },
        {"query": "goal!", "label": "sports", "task": "news", "task_type": "classification"},
    ]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    config = ConvertPairsConfig(instruction="Default instruction", task_type=TaskType.RERANKING)
    stats = run_convert_step(config, [source], tmp_path / "out")
    assert stats["written"] == 3
    first, second, third = read_examples(tmp_path / "out" / "examples.jsonl").examples
    # the config sets defaults for lines without their own
    assert (first.task_type, first.instruction, first.label, dict(first.meta)) == (
        TaskType.RERANKING,
        "Default instruction",
        None,
        {"lang": "de"},
    )
    assert (second.task_type, second.instruction, second.label) == (TaskType.STS, "Same meaning?", "4")
    assert second.negatives == ("5",) and second.negative_labels == ("five",)
    assert third.positives == () and third.label == "sports" and third.task_type == TaskType.CLASSIFICATION
    assert example_from_dict(json.loads(json.dumps(example_to_dict(second)))) == second


def test_convert_rejects_bad_fields() -> None:
    with pytest.raises(InvalidInputError, match="unknown task_type 'qa'"):
        pair_to_example({"query": "q", "positive": "p", "task": "t", "task_type": "qa"})
    with pytest.raises(InvalidInputError, match="only lines with a 'label'"):
        pair_to_example({"query": "q", "task": "t"})
    with pytest.raises(InvalidInputError, match="one label per negative"):
        pair_to_example(
            {"query": "q", "positive": "p", "negatives": ["n"], "negative_labels": [], "task": "t"}
        )
    with pytest.raises(InvalidInputError, match="instruction"):
        pair_to_example({"query": "q", "positive": "p", "task": "t", "instruction": " "})


def labelled_texts() -> list[TrainingExample]:
    texts = {
        "sports": ["the match ended in a draw", "a late goal won the cup", "the striker scored twice"],
        "cooking": ["simmer the sauce for an hour", "knead the dough until smooth", "roast the garlic"],
        "weather": ["heavy rain is expected", "a cold front moves in", "sunny skies all week"],
    }
    return [
        TrainingExample(
            text, task="topics", task_type=TaskType.CLUSTERING, instruction="Identify the topic", label=label
        )
        for label, group in texts.items()
        for text in group
    ]


def test_label_and_mine_keep_fields_and_the_class_of_every_negative(default_encoder: Encoder) -> None:
    labelled = label_examples(labelled_texts(), n_positives=1, n_negatives=2, seed=0).examples
    assert len(labelled) == 9
    label_of = {ex.query: ex.label for ex in labelled}
    for ex in labelled:
        assert ex.task_type == TaskType.CLUSTERING and ex.instruction == "Identify the topic"
        assert all(label_of[p] == ex.label for p in ex.positives)
        assert ex.negative_labels == tuple(label_of[n] for n in ex.negatives)
        assert ex.label not in ex.negative_labels
    # mining on labelled data: never a text of the query's own class, and the class is kept
    stripped = [ex.with_negatives([]) for ex in labelled]
    mined = mine_hard_negatives(stripped, default_encoder, n=3, window=(0, 20), seed=0)
    for ex in mined.examples:
        assert ex.task_type == TaskType.CLUSTERING and ex.instruction == "Identify the topic"
        assert len(ex.negatives) == 3 and ex.negative_labels is not None
        assert ex.negative_labels == tuple(label_of[n] for n in ex.negatives)
        assert ex.label not in ex.negative_labels
    assert mined.counts["same_label_excluded"] > 0


class RecordingEncoder:
    """The real packaged MiniLM encoder, noting which prefix each document call used."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.config = KALM  # instruction-aware, so instructions are passed on
        self.document_prefixes: list[str] = []

    def encode_query(self, texts: Any, *, instruction: str | None = None, task: Any = None) -> Any:
        return self.encoder.encode([KALM.query_prefix(instruction=instruction, task=task) + t for t in texts])

    def encode_document(self, texts: Any, *, task: Any = None, instruction: str | None = None) -> Any:
        prefix = KALM.document_prefix(task=task, instruction=instruction)
        self.document_prefixes.append(prefix)
        return self.encoder.encode([prefix + t for t in texts])


def test_filter_mine_and_teacher_embed_symmetric_documents_with_the_line_instruction(
    default_encoder: Encoder,
) -> None:
    recorder = RecordingEncoder(default_encoder)
    labelled = label_examples(labelled_texts(), n_negatives=2, seed=0).examples
    mine_hard_negatives(labelled, recorder, n=2, window=(0, 10))
    scored = add_teacher_scores(labelled, recorder)
    assert set(recorder.document_prefixes) == {"Instruct: Identify the topic \n Query: "}
    assert all(ex.teacher_scores is not None and np.isfinite(ex.teacher_scores).all() for ex in scored)


def test_label_ids_are_stable_and_task_scoped() -> None:
    assert label_id("t", None) == -1
    assert label_id("t", "x") == label_id("t", "x") >= 0
    assert label_id("t", "x") != label_id("u", "x")
    # a fixed value: the same in every process and Python run (hash() would be salted)
    assert label_id("news", "sports") == 1872291084005552946


def test_convert_samples_per_group_and_splits_tasks(tmp_path: Path) -> None:
    lines = [
        {"query": f"q{lang}{i}", "positive": f"p{lang}{i}", "task": "gettext", "lang": lang}
        for lang, count in (("de", 5), ("fr", 3), ("ja", 1))
        for i in range(count)
    ]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    config = ConvertPairsConfig(sample=2, sample_by="lang", task_by="lang", task_type=TaskType.BITEXT, seed=3)
    stats = run_convert_step(config, [source], tmp_path / "out")
    examples = read_examples(tmp_path / "out" / "examples.jsonl").examples
    assert stats["sampled_out"] == 4 and stats["sampled_per_group"] == {"de": 2, "fr": 2, "ja": 1}
    assert stats["tasks"] == {"gettext-de": 2, "gettext-fr": 2, "gettext-ja": 1}
    assert all(ex.task == f"gettext-{ex.meta['lang']}" and ex.task_type == TaskType.BITEXT for ex in examples)
    order = [line["query"] for line in lines]
    kept = [ex.query for ex in examples]
    assert kept == sorted(kept, key=order.index)  # file order kept
    again = run_convert_step(config, [source], tmp_path / "again")
    assert again == stats  # seeded
