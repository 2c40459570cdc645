"""The six synthetic task types of KaLM v1 and the prompts that produce them.

Four retrieval shapes (short-long, long-short, short-short, long-long) are brainstormed first:
an LLM with a random persona as system prompt invents task instructions, then writes one
example per instruction without the persona (the paper keeps the persona to the first stage
to avoid conflicts between the stages). STS and bitext have fixed instructions, so they are
one-stage; there the persona is the system prompt of that one stage, for topic diversity.

Prompt texts live in ``kalm_trainer/prompts/*.txt`` (``string.Template``: ``$name``), and can
be replaced by a folder of files with the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from kalm_rag.errors import ConfigError
from kalm_rag.instructions import DEFAULT_INSTRUCTIONS, TaskType

__all__ = ["SYNTH_TASKS", "SynthTask", "load_prompt", "render_prompt"]

SHORT = "a short text (a phrase, keywords or a question)"
LONG = "a long text (one or more paragraphs)"
SHORT_DOC = "a short text (a title, a label or a one-sentence summary)"


@dataclass(frozen=True, slots=True)
class SynthTask:
    name: str
    task_type: TaskType
    query_kind: str
    document_kind: str
    brainstormed: bool  # True: stage 1 invents instructions; False: ``instruction`` is fixed
    example_prompt: str  # prompt file name

    @property
    def instruction(self) -> str:
        return DEFAULT_INSTRUCTIONS[self.task_type]


SYNTH_TASKS: dict[str, SynthTask] = {
    task.name: task
    for task in (
        SynthTask("short-long", TaskType.RETRIEVAL, SHORT, LONG, True, "example_retrieval.txt"),
        SynthTask("long-short", TaskType.RETRIEVAL, LONG, SHORT_DOC, True, "example_retrieval.txt"),
        SynthTask("short-short", TaskType.RETRIEVAL, SHORT, SHORT_DOC, True, "example_retrieval.txt"),
        SynthTask("long-long", TaskType.RETRIEVAL, LONG, LONG, True, "example_retrieval.txt"),
        SynthTask("sts", TaskType.STS, "a sentence", "a sentence", False, "example_sts.txt"),
        SynthTask("bitext", TaskType.BITEXT, "a sentence", "a sentence", False, "example_bitext.txt"),
    )
}

BRAINSTORM_PROMPT = "brainstorm_retrieval.txt"
PERSONA_PROMPT = "text_to_persona.txt"

# Knobs sampled per example so that outputs vary in shape, not only in topic.
_QUERY_LENGTHS = ("fewer than 5 words", "5 to 15 words long", "at least 10 words long")
_CLARITY = ("clear", "slightly ambiguous", "understandable with some effort")
_NUM_WORDS = ("50", "100", "200")
_DIFFICULTY = ("high school", "college", "PhD")
_UNITS = ("sentence", "sentence", "short paragraph")


def load_prompt(name: str, prompts_dir: str | Path | None = None) -> Template:
    """A prompt template from ``prompts_dir`` or the packaged prompts."""
    if prompts_dir is not None:
        path = Path(prompts_dir) / name
        if not path.is_file():
            raise ConfigError(f"prompt file {name!r} not found in {prompts_dir}")
        return Template(path.read_text(encoding="utf-8"))
    return Template(resources.files("kalm_trainer").joinpath("prompts", name).read_text(encoding="utf-8"))


def render_prompt(template: Template, values: dict[str, str]) -> str:
    try:
        return template.substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"prompt template needs a value for {exc}") from exc


def example_values(
    task: SynthTask,
    rng: np.random.Generator,
    *,
    instruction: str,
    languages: tuple[str, ...],
    bitext_languages: tuple[str, ...],
) -> dict[str, str]:
    """The ``$names`` of an example prompt, with the random knobs drawn from ``rng``."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    source, target = (
        bitext_languages[int(i)] for i in rng.choice(len(bitext_languages), size=2, replace=False)
    )
    return {
        "task": instruction,
        "query_kind": task.query_kind,
        "document_kind": task.document_kind,
        "query_length": pick(_QUERY_LENGTHS),
        "clarity": pick(_CLARITY),
        "num_words": pick(_NUM_WORDS),
        "difficulty": pick(_DIFFICULTY),
        "language": pick(languages),
        "unit": pick(_UNITS),
        "source_language": source,
        "target_language": target,
    }
