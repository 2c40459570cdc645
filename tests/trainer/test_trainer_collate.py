"""The collator: prompts as the SDK writes them, fixed-size groups, labels and teacher scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from kalm_trainer.collate import EmbeddingCollator, choose_group, label_id, passage_prefix, query_prefix
from kalm_trainer.data.schema import TaskType, TrainingExample

from kalm_rag.config import ModelConfig
from kalm_rag.errors import InvalidInputError
from kalm_rag.instructions import KALM_TEMPLATE
from kalm_rag.loading import load_tokenizer

KALM = ModelConfig(instruction_template=KALM_TEMPLATE)
E5 = ModelConfig(query_prompt="query: ", document_prompt="passage: ")


def test_prompts_follow_the_model_config() -> None:
    retrieval = TrainingExample("q", ("p",), instruction="Find the package")
    assert query_prefix(KALM, retrieval) == "Instruct: Find the package \n Query: "
    assert passage_prefix(KALM, retrieval) == ""
    sts = TrainingExample(
        "a", ("b",), task_type=TaskType.STS, instruction="Retrieve semantically similar text"
    )
    assert (
        passage_prefix(KALM, sts)
        == query_prefix(KALM, sts)
        == "Instruct: Retrieve semantically similar text \n Query: "
    )
    no_instruction = TrainingExample("q", ("p",), task_type=TaskType.STS)
    assert query_prefix(KALM, no_instruction) == KALM.query_prefix(task="sts")
    # a model trained without instructions keeps its fixed prompts and ignores the instruction
    assert (query_prefix(E5, retrieval), passage_prefix(E5, retrieval)) == ("query: ", "passage: ")


def test_groups_have_fixed_size_and_are_deterministic() -> None:
    few = TrainingExample("q", ("p",), ("n0", "n1"))
    positive, picks = choose_group(few, 5, seed=0)
    assert positive == 0 and len(picks) == 5 and picks[:2] == [0, 1] and set(picks) <= {0, 1}
    many = TrainingExample("q2", ("p",), tuple(f"n{i}" for i in range(10)))
    _, picks = choose_group(many, 3, seed=0)
    assert len(set(picks)) == 3
    assert choose_group(many, 3, seed=0) == choose_group(many, 3, seed=0)
    assert choose_group(TrainingExample("q", ("p",), ("a", "b", "c")), 3, seed=1)[1] == [0, 1, 2]
    assert choose_group(many, 0, seed=0) == (0, [])


def test_missing_negatives_are_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="mine_negatives"):
        choose_group(TrainingExample("q", ("p",)), 2, seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen2_dir: Path) -> Any:
    return load_tokenizer(tiny_qwen2_dir)


def test_batch_layout(tokenizer: Any) -> None:
    examples = [
        TrainingExample("search index", ("open source search",), ("kernel", "driver"), task="t"),
        TrainingExample("python tool", ("a python package",), ("linux",), task="t"),
    ]
    collator = EmbeddingCollator(
        tokenizer, KALM, num_negatives=2, query_max_length=128, passage_max_length=32
    )
    batch = collator(examples)
    assert batch["query"]["input_ids"].shape[0] == 2
    assert batch["passage"]["input_ids"].shape[0] == 6  # 2 groups of 1 positive + 2 negatives
    texts = tokenizer.batch_decode(
        [
            ids[mask.bool()]
            for ids, mask in zip(
                batch["passage"]["input_ids"], batch["passage"]["attention_mask"], strict=True
            )
        ]
    )
    assert texts[:3] == ["open source search", "kernel", "driver"]
    assert texts[3] == "a python package" and texts[4:] == ["linux", "linux"]
    query = tokenizer.decode(batch["query"]["input_ids"][0][batch["query"]["attention_mask"][0].bool()])
    assert query == KALM.query_prefix() + "search index"
    assert torch.equal(batch["labels"], torch.full((2, 3), -1))  # retrieval data: unlabelled
    assert "teacher_scores" not in batch


def test_labels_and_teacher_scores_follow_the_chosen_candidates(tokenizer: Any) -> None:
    examples = [
        TrainingExample(
            "a",
            ("a2",),
            ("b1", "c1"),
            task="cls",
            label="x",
            negative_labels=("y", "z"),
            teacher_scores=(0.9, 0.2, 0.1),
        ),
        TrainingExample("b", ("b2",), ("a1", "c1"), task="cls", label="y", teacher_scores=(0.8, 0.3, 0.4)),
        TrainingExample(
            "a3",
            ("a4",),
            ("b1", "c2"),
            task="cls",
            label="x",
            negative_labels=("y", None),
            teacher_scores=(0.7, 0.5, 0.6),
        ),
    ]
    batch = EmbeddingCollator(tokenizer, KALM, num_negatives=2)(examples)
    x, y, z = (label_id("cls", name) for name in "xyz")
    # every candidate's class: query/positive, then each negative (-1 = unknown)
    assert batch["labels"].tolist() == [[x, y, z], [y, -1, -1], [x, y, -1]]
    expected = torch.tensor([[0.9, 0.2, 0.1], [0.8, 0.3, 0.4], [0.7, 0.5, 0.6]])
    torch.testing.assert_close(batch["teacher_scores"], expected)
    # with one negative kept, the teacher scores follow the choice
    one = EmbeddingCollator(tokenizer, KALM, num_negatives=1)(examples[:1])
    _, picks = choose_group(examples[0], 1, seed=0)
    assert examples[0].teacher_scores is not None
    expected_one = torch.tensor([[0.9, examples[0].teacher_scores[1 + picks[0]]]])
    torch.testing.assert_close(one["teacher_scores"], expected_one)
