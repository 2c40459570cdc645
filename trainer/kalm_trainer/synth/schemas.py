"""JSON schemas of the replies each generation stage expects.

Backends that can constrain decoding (llama.cpp grammars, a logits processor for transformers,
``response_format`` of OpenAI-compatible servers) are given these schemas, so that a reply
is valid JSON of the right shape by construction; the parsers in ``parse.py`` still check
every reply (servers may ignore the schema, and the string rules are stricter there).

String lengths are bounded, and the bounds follow the stage's token budget: a model that
never closes a string, or writes long ones, would otherwise hit the token limit and leave
truncated JSON behind (the callers pass about 3 characters a token for short strings and 1 for
the three strings of an example; text in scripts with fewer characters a token, such as
Chinese, can still run into the limit).
"""

from __future__ import annotations

from typing import Any

from kalm_trainer.synth.parse import MAX_DOCUMENT_CHARS, MAX_QUERY_CHARS

__all__ = ["JsonSchema", "example_schema", "instructions_schema", "persona_schema"]

JsonSchema = dict[str, Any]


def _string(min_length: int, max_length: int) -> JsonSchema:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


def instructions_schema(count: int, max_tokens: int = 384) -> JsonSchema:
    """Stage 1: a list of 1..``count`` one-sentence task instructions."""
    per_item = max(40, min(300, 3 * max_tokens // max(1, count)))
    return {
        "type": "array",
        "items": _string(10, per_item),
        "minItems": 1,
        "maxItems": max(1, count),
    }


def example_schema(max_chars: int = MAX_DOCUMENT_CHARS) -> JsonSchema:
    """Stage 2: ``{"query", "positive", "hard_negative"}``, each at most ``max_chars`` long."""
    document = _string(1, min(max_chars, MAX_DOCUMENT_CHARS))
    return {
        "type": "object",
        "properties": {
            "query": _string(1, min(max_chars, MAX_QUERY_CHARS)),
            "positive": document,
            "hard_negative": document,
        },
        "required": ["query", "positive", "hard_negative"],
        "additionalProperties": False,
    }


def persona_schema(max_tokens: int = 96) -> JsonSchema:
    """Text-to-persona: ``{"persona": "..."}``, one sentence."""
    return {
        "type": "object",
        "properties": {"persona": _string(10, max(40, min(300, 2 * max_tokens)))},
        "required": ["persona"],
        "additionalProperties": False,
    }
