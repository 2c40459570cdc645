"""Personas: read them from a file, or derive them from a corpus (text-to-persona).

Text-to-persona asks the LLM who would read, write or need a text: a corpus of the target
domain then yields personas from that domain, which steer the brainstorm stage towards it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kalm_rag.errors import InvalidInputError
from kalm_trainer.synth.llm import ChatMessage, ChatModel, Sampling
from kalm_trainer.synth.parse import dedupe_key, parse_persona
from kalm_trainer.synth.retry import ask_until_valid
from kalm_trainer.synth.schemas import persona_schema
from kalm_trainer.synth.tasks import PERSONA_PROMPT, load_prompt, render_prompt

__all__ = ["corpus_texts", "load_personas", "personas_from_texts"]

PathLike = str | os.PathLike[str]
_TEXT_KEYS = ("persona", "text", "positive", "query")


def _line_text(path: PathLike, number: int, line: str, keys: Sequence[str]) -> str:
    """The text of one line: plain text for .txt, else the first present key of a JSON object
    (or the first of its ``positives``)."""
    if not str(path).endswith(".jsonl"):
        return line.strip()
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), str) and obj[key].strip():
                return str(obj[key]).strip()
        positives = obj.get("positives")
        if isinstance(positives, list) and positives and isinstance(positives[0], str):
            return positives[0].strip()
    raise InvalidInputError(f"{path}:{number}: no text under any of the keys {list(keys)} or 'positives'")


def _read_texts(paths: Sequence[PathLike], keys: Sequence[str]) -> list[str]:
    texts = []
    for path in paths:
        if not Path(path).is_file():
            raise InvalidInputError(f"file not found: {path}")
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    texts.append(_line_text(path, number, line, keys))
    return texts


def load_personas(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """Personas from ``.txt`` (one a line) or ``.jsonl`` (``{"persona": ...}``) files, with
    duplicates removed (case and punctuation ignored)."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    unique: dict[str, str] = {}
    for text in _read_texts(items, ("persona",)):
        unique.setdefault(dedupe_key(text), text)
    if not unique:
        raise InvalidInputError(f"no personas found in {[str(p) for p in items]}")
    return list(unique.values())


def corpus_texts(
    paths: PathLike | Sequence[PathLike], *, max_texts: int | None = None, seed: int = 0
) -> list[str]:
    """Texts of a corpus (``.txt`` lines, or JSONL with ``text``/``positive``/``query`` or
    ``positives``), a seeded sample of ``max_texts`` when there are more."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    texts = list(dict.fromkeys(_read_texts(items, _TEXT_KEYS[1:])))
    if max_texts is not None and len(texts) > max_texts:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=max_texts, replace=False))
        texts = [texts[i] for i in keep]
    return texts


def personas_from_texts(
    llm: ChatModel,
    texts: Sequence[str],
    *,
    sampling: Sampling,
    max_retries: int = 2,
    seed: int = 0,
    max_chars: int = 1500,
    prompts_dir: str | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """One persona per text (deduplicated); returns the personas and the stage counts."""
    template = load_prompt(PERSONA_PROMPT, prompts_dir)
    conversations: list[list[ChatMessage]] = [
        [{"role": "user", "content": render_prompt(template, {"text": text[:max_chars]})}] for text in texts
    ]
    found, counts = ask_until_valid(
        llm,
        conversations,
        parse_persona,
        sampling=sampling,
        max_retries=max_retries,
        seed=seed,
        schema=persona_schema(sampling.max_new_tokens),
    )
    unique: dict[str, str] = {}
    for persona in found:
        if persona is not None:
            unique.setdefault(dedupe_key(persona), persona)
    stats = {
        **counts.as_dict("persona"),
        "personas_duplicate": counts.ok - len(unique),
        "personas": len(unique),
    }
    return list(unique.values()), stats
