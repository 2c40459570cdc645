"""Pull JSON out of LLM replies and validate it. Every rejection has a short reason, so the
pipeline can count why outputs were dropped (small models often wrap, truncate or invent keys).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MalformedOutput",
    "SynthPair",
    "dedupe_key",
    "extract_json",
    "parse_example",
    "parse_instructions",
    "parse_persona",
]

MAX_QUERY_CHARS = 2000
MAX_DOCUMENT_CHARS = 8000
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class MalformedOutput(ValueError):
    """An LLM reply that cannot be used; ``reason`` is a short, countable label.

    ``content`` marks replies of the right JSON shape whose text is unusable (a repeated or
    too long string): JSON-schema constraints prevent the other kind, not this one.
    """

    def __init__(self, reason: str, *, content: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.content = content


def extract_json(text: str | None, *, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
    """The first JSON object (``kind=dict``) or array (``kind=list``) in ``text``, fenced or bare."""
    if not text or not text.strip():
        raise MalformedOutput("empty reply")
    opener = "{" if kind is dict else "["
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for match in re.finditer(re.escape(opener), candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, kind):
                return value
    raise MalformedOutput(f"no JSON {'object' if kind is dict else 'list'}")


def _clean(value: Any, key: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise MalformedOutput(f"'{key}' is not a string")
    text = value.strip()
    if not text:
        raise MalformedOutput(f"'{key}' is empty", content=True)
    if len(text) > max_chars:
        raise MalformedOutput(f"'{key}' is too long", content=True)
    return text


@dataclass(frozen=True, slots=True)
class SynthPair:
    query: str
    positive: str
    hard_negative: str


def parse_example(reply: str | None) -> SynthPair:
    """``{"query", "positive", "hard_negative"}`` with three distinct non-empty strings."""
    obj = extract_json(reply, kind=dict)
    missing = [k for k in ("query", "positive", "hard_negative") if k not in obj]
    if missing:
        raise MalformedOutput(f"missing key '{missing[0]}'")
    pair = SynthPair(
        _clean(obj["query"], "query", MAX_QUERY_CHARS),
        _clean(obj["positive"], "positive", MAX_DOCUMENT_CHARS),
        _clean(obj["hard_negative"], "hard_negative", MAX_DOCUMENT_CHARS),
    )
    if len({pair.query, pair.positive, pair.hard_negative}) < 3:
        raise MalformedOutput("repeated text", content=True)
    return pair


def parse_instructions(reply: str | None) -> list[str]:
    """A JSON list of task instructions (one line each, 10-300 characters); at least one."""
    items = extract_json(reply, kind=list)
    found = []
    for item in items:
        if isinstance(item, str) and 10 <= len(item.strip()) <= 300 and "\n" not in item.strip():
            found.append(item.strip().rstrip(".").strip())
    if not found:  # strings of the wrong length are a content problem, other items a format one
        raise MalformedOutput(
            "no usable instruction", content=bool(items) and all(isinstance(i, str) for i in items)
        )
    return found


def parse_persona(reply: str | None) -> str:
    """``{"persona": "..."}``, one sentence of 10-300 characters."""
    obj = extract_json(reply, kind=dict)
    persona = _clean(obj.get("persona"), "persona", 300)
    if len(persona) < 10 or "\n" in persona:
        raise MalformedOutput("persona is not one sentence", content=True)
    return persona


def dedupe_key(text: str) -> str:
    """Key for de-duplication: NFKC, case-folded, punctuation and spacing ignored."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in folded).split())
