"""Parsing LLM replies and the prompt/task definitions of synthetic generation."""

from __future__ import annotations

import numpy as np
import pytest
from kalm_trainer.synth.parse import (
    MalformedOutput,
    dedupe_key,
    extract_json,
    parse_example,
    parse_instructions,
    parse_persona,
)
from kalm_trainer.synth.tasks import SYNTH_TASKS, example_values, load_prompt, render_prompt

EXAMPLE = '{"query": "q text", "positive": "p text", "hard_negative": "n text"}'


@pytest.mark.parametrize(
    "reply",
    [
        EXAMPLE,
        f"Sure! Here it is:\n```json\n{EXAMPLE}\n```\nHope it helps.",
        f"Some {{braces}} first, then {EXAMPLE} and trailing words",
    ],
)
def test_example_found_in_wrapped_replies(reply: str) -> None:
    pair = parse_example(reply)
    assert (pair.query, pair.positive, pair.hard_negative) == ("q text", "p text", "n text")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty reply"),
        ("I cannot do that.", "no JSON object"),
        ('{"query": "q", "positive": "p"}', "missing key 'hard_negative'"),
        ('{"query": "q", "positive": {"text": "p"}, "hard_negative": "n"}', "'positive' is not a string"),
        ('{"query": "q", "positive": "  ", "hard_negative": "n"}', "'positive' is empty"),
        ('{"query": "same", "positive": "same", "hard_negative": "n"}', "repeated text"),
        ('{"query": "q", "positive": "p", "hard_negative": "n"', "no JSON object"),  # truncated
    ],
)
def test_malformed_examples_have_countable_reasons(reply: str, reason: str) -> None:
    with pytest.raises(MalformedOutput) as info:
        parse_example(reply)
    assert info.value.reason == reason


def test_instruction_lists() -> None:
    reply = (
        'Tasks:\n["Given a recipe name, retrieve the recipe.", "short", 3, "Given a bug report, find fixes"]'
    )
    assert parse_instructions(reply) == [
        "Given a recipe name, retrieve the recipe",
        "Given a bug report, find fixes",
    ]
    with pytest.raises(MalformedOutput, match="no usable instruction"):
        parse_instructions('["x", "y"]')
    with pytest.raises(MalformedOutput, match="no JSON list"):
        parse_instructions('{"tasks": "none"}')


def test_persona_and_dedupe_key() -> None:
    assert parse_persona('{"persona": "A nurse working night shifts"}') == "A nurse working night shifts"
    with pytest.raises(MalformedOutput):
        parse_persona('{"persona": "Bob"}')
    assert dedupe_key("Given a Query, retrieve docs.") == dedupe_key("given a query retrieve  docs")
    assert extract_json("[1, 2] and [3]", kind=list) == [1, 2]


def test_every_task_prompt_renders_without_missing_values() -> None:
    assert len(SYNTH_TASKS) == 6
    rng = np.random.default_rng(0)
    for task in SYNTH_TASKS.values():
        values = example_values(
            task,
            rng,
            instruction="Given x, find y",
            languages=("English",),
            bitext_languages=("English", "German"),
        )
        text = render_prompt(load_prompt(task.example_prompt), values)
        assert "$" not in text and '"hard_negative"' in text
    brainstorm = render_prompt(
        load_prompt("brainstorm_retrieval.txt"), {"count": "3", "query_kind": "q", "document_kind": "d"}
    )
    assert "JSON list of 3 strings" in brainstorm
