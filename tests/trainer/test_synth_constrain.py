"""Schemas, constraining and counting, without a model: the stage schemas against the parsers,
lm-format-enforcer's character-level JSON-schema parser (the core of the transformers
constraint) on good and bad replies, and the first-try counts on recorded replies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from kalm_trainer.synth.llm import ChatMessage, Sampling
from kalm_trainer.synth.parse import MalformedOutput, parse_example, parse_instructions, parse_persona
from kalm_trainer.synth.retry import ask_until_valid
from kalm_trainer.synth.schemas import example_schema, instructions_schema, persona_schema

# Replies recorded from SmolLM2-135M-Instruct without constraints (brainstorm stage)
RECORDED_UNCONSTRAINED = [
    'Here are 2 retrieval tasks:\n1. "Given a map title, find the map"\n2. Find old atlases',
    '["Maps", "Atlas"]',
    '```json\n[\n  {"task": "Given a bicycle part, retrieve repair guides"}\n]\n```',
]
EXAMPLE = {"query": "fix a flat tyre", "positive": "Remove the wheel, then ...", "hard_negative": "Tyres ..."}


def accepts(schema: dict[str, Any], text: str) -> bool:
    """Whether the JSON-schema parser lets ``text`` be generated and then end."""
    from lmformatenforcer import JsonSchemaParser

    parser: Any = JsonSchemaParser(schema)
    for char in text:
        if char not in parser.get_allowed_characters():
            return False
        parser = parser.add_character(char)
    return bool(parser.can_end())


def test_schema_accepts_what_the_parsers_accept() -> None:
    good = json.dumps(EXAMPLE)
    assert accepts(example_schema(), good) and parse_example(good).query == "fix a flat tyre"
    tasks = json.dumps(["Given a map title, retrieve the map", "Given a bike part, retrieve guides"])
    assert accepts(instructions_schema(3), tasks) and len(parse_instructions(tasks)) == 2
    persona = json.dumps({"persona": "A librarian who catalogues old maps"})
    assert accepts(persona_schema(), persona) and parse_persona(persona).startswith("A librarian")


@pytest.mark.parametrize(
    ("schema", "text", "why"),
    [
        (example_schema(), "Sure! " + json.dumps(EXAMPLE), "prose before the JSON"),
        (example_schema(), json.dumps({**EXAMPLE, "extra": "x"}), "a key the schema lacks"),
        (example_schema(), json.dumps({"query": "q", "positive": "p"}), "a missing key"),
        (example_schema(max_chars=200), json.dumps({**EXAMPLE, "positive": "x" * 201}), "a runaway string"),
        (
            instructions_schema(2),
            json.dumps(["Given a, retrieve b", "Given c, find d", "Given e, f"]),
            "too many",
        ),
        (instructions_schema(2), json.dumps(["Maps", "Atlas"]), "instructions under 10 characters"),
        (instructions_schema(2), RECORDED_UNCONSTRAINED[2].split("\n", 1)[1], "objects instead of strings"),
        (persona_schema(), '{"persona": "A librarian"', "unfinished JSON"),
        (
            persona_schema(64),
            json.dumps({"persona": "A " + "very " * 26 + "old man"}),
            "over the token budget",
        ),
    ],
)
def test_schema_rejects_what_small_models_write(schema: dict[str, Any], text: str, why: str) -> None:
    assert not accepts(schema, text), why


@dataclass
class Replay:
    """A stand-in LLM that answers from recorded replies, in order, and keeps what it was asked."""

    replies: list[str | None]
    schemas: list[dict[str, Any] | None] = field(default_factory=list)
    calls: int = 0
    constrain: bool = True  # says it decodes under the schema (recorded replies: as if it had)

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        *,
        sampling: Sampling,
        seed: int = 0,
        schema: dict[str, Any] | None = None,
    ) -> list[str | None]:
        self.calls += 1
        self.schemas.append(schema)
        out, self.replies = self.replies[: len(conversations)], self.replies[len(conversations) :]
        return out


def test_first_try_counts_on_recorded_replies() -> None:
    conversations: list[list[ChatMessage]] = [[{"role": "user", "content": f"task {i}"}] for i in range(5)]
    good = '["Given a map title, retrieve the map"]'
    # first round: 2 good, 3 recorded failures; second round: 2 recovered, 1 request error
    llm = Replay([good, *RECORDED_UNCONSTRAINED, good, good, good, None])
    schema = instructions_schema(2)
    results, counts = ask_until_valid(
        llm, conversations, parse_instructions, sampling=Sampling(), max_retries=1, seed=0, schema=schema
    )
    assert llm.schemas == [schema, schema]  # every attempt carried the stage's schema
    assert [r is not None for r in results] == [True, True, True, False, True]
    assert counts.requested == 5 and counts.ok == 4 and counts.first_try_ok == 2
    assert counts.recovered == 2 and counts.retries == 3 and counts.dropped == 1
    assert counts.malformed == 3 and counts.request_errors == 1
    # ["Maps", "Atlas"] has the right JSON shape (strings too short): only the text is unusable
    assert counts.malformed_content == 1 and counts.first_try_json_ok == 3
    assert counts.reasons == {"no JSON list": 1, "no usable instruction": 2}
    stats = counts.as_dict("brainstorm")
    assert stats["brainstorm_first_try_rate"] == 0.4 and stats["brainstorm_first_try_json_rate"] == 0.6
    assert stats["brainstorm_constrained"] is True
    with pytest.raises(MalformedOutput):
        parse_instructions(RECORDED_UNCONSTRAINED[1])


def test_default_llm_is_resolved_from_what_is_installed() -> None:
    from kalm_trainer.synth.llm import LLMConfig, local_qwen_available

    from kalm_rag.errors import ConfigError

    auto = LLMConfig().resolved()
    assert auto.backend == ("llamacpp" if local_qwen_available() else "transformers")
    assert auto.model == ("qwen2.5-coder-1.5b" if auto.backend == "llamacpp" else "smollm2-135m")
    assert auto.constrain is True
    assert LLMConfig(backend="llamacpp").resolved().model == "qwen2.5-coder-1.5b"
    assert LLMConfig(backend="transformers", model="x.gguf").resolved().model == "x.gguf"
    with pytest.raises(ConfigError, match="model's name"):
        LLMConfig(backend="openai", base_url="http://127.0.0.1:1/v1")
