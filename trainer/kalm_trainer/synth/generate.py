"""Persona-based synthetic data generation (KaLM v1), as a function of an LLM and personas.

Stage 1 (brainstorm): with a random persona as system prompt, the LLM lists retrieval task
instructions for a task shape (short-long, ...). Instructions are de-duplicated.
Stage 2 (example): for each instruction, the LLM writes ``{"query", "positive",
"hard_negative"}``. STS and bitext skip stage 1 (their instruction is fixed).
Malformed replies are re-asked up to ``max_retries`` times, then dropped; all of it is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.synth.llm import ChatMessage, ChatModel, LLMConfig, Sampling
from kalm_trainer.synth.parse import SynthPair, dedupe_key, parse_example, parse_instructions
from kalm_trainer.synth.retry import ask_until_valid
from kalm_trainer.synth.schemas import example_schema, instructions_schema
from kalm_trainer.synth.tasks import (
    BRAINSTORM_PROMPT,
    SYNTH_TASKS,
    SynthTask,
    example_values,
    load_prompt,
    render_prompt,
)

__all__ = ["SynthConfig", "SynthResult", "generate_synthetic"]


@dataclass(frozen=True)
class SynthConfig(StepConfig):
    llm: LLMConfig = field(default_factory=LLMConfig)
    task_types: tuple[str, ...] = tuple(SYNTH_TASKS)
    brainstorms_per_task: int = 4  # stage-1 requests per brainstormed task shape
    instructions_per_brainstorm: int = 5  # asked for, and kept at most, per brainstorm
    examples_per_instruction: int = 1
    symmetric_examples: int = 20  # examples per one-stage task (sts, bitext)
    max_retries: int = 2
    languages: tuple[str, ...] = ("English",)
    bitext_languages: tuple[str, ...] = ("English", "German", "French", "Spanish", "Chinese")
    temperature: float = 0.8
    top_p: float = 0.95
    brainstorm_max_tokens: int = 384
    example_max_tokens: int = 768
    task_prefix: str = "synthetic"  # example task names are "<prefix>-<task type>"
    prompts_dir: str | None = None  # a folder of prompt files overriding the packaged ones
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [t for t in self.task_types if t not in SYNTH_TASKS]
        if unknown or not self.task_types:
            raise ConfigError(f"unknown synthetic task type(s) {unknown}; choose from {list(SYNTH_TASKS)}")
        counts = (self.brainstorms_per_task, self.instructions_per_brainstorm, self.examples_per_instruction)
        if min(counts) < 1 or self.symmetric_examples < 0 or self.max_retries < 0:
            raise ConfigError(
                "synthetic generation counts must be >= 1 (symmetric_examples, max_retries >= 0)"
            )
        if not self.languages or len(set(self.bitext_languages)) < 2:
            raise ConfigError("need at least one language and two distinct bitext_languages")
        Sampling(self.brainstorm_max_tokens, self.temperature, self.top_p)  # validates

    def example_max_chars(self) -> int:
        """Longest string the example schema allows: three strings share the token budget,
        at ~4 characters a token in English, with room for the JSON around them and for text
        of fewer characters a token (code, other scripts). At 1 character a token, Qwen's
        replies with code in them ran out of tokens before the third string."""
        return max(160, self.example_max_tokens * 2 // 3)

    def sampling(self, max_new_tokens: int) -> Sampling:
        return Sampling(max_new_tokens, self.temperature, self.top_p)


@dataclass(slots=True)
class SynthResult:
    examples: list[TrainingExample]
    instructions: list[tuple[str, str]]  # (task type, instruction), unique, in generation order
    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Job:
    task: SynthTask
    instruction: str
    persona: str | None
    values: dict[str, str]
    system: bool  # persona as system prompt (one-stage tasks only)


def _persona_message(persona: str) -> ChatMessage:
    return {"role": "system", "content": f"You are this person: {persona}"}


def _brainstorm(
    llm: ChatModel,
    personas: Sequence[str],
    tasks: list[SynthTask],
    config: SynthConfig,
    rng: np.random.Generator,
) -> tuple[list[tuple[SynthTask, str, str]], dict[str, Any]]:
    template = load_prompt(BRAINSTORM_PROMPT, config.prompts_dir)
    jobs = [
        (task, personas[int(rng.integers(len(personas)))])
        for task in tasks
        for _ in range(config.brainstorms_per_task)
    ]
    conversations: list[list[ChatMessage]] = []
    for task, persona in jobs:
        values = {
            "count": str(config.instructions_per_brainstorm),
            "query_kind": task.query_kind,
            "document_kind": task.document_kind,
        }
        conversations.append(
            [_persona_message(persona), {"role": "user", "content": render_prompt(template, values)}]
        )
    lists, counts = ask_until_valid(
        llm,
        conversations,
        parse_instructions,
        sampling=config.sampling(config.brainstorm_max_tokens),
        max_retries=config.max_retries,
        seed=config.seed * 2 + 1,
        schema=instructions_schema(config.instructions_per_brainstorm, config.brainstorm_max_tokens),
    )
    seen: set[str] = set()
    unique: list[tuple[SynthTask, str, str]] = []
    found = 0
    for (task, persona), items in zip(jobs, lists, strict=True):
        for text in (items or [])[: config.instructions_per_brainstorm]:
            found += 1
            key = dedupe_key(text)
            if key not in seen:
                seen.add(key)
                unique.append((task, text, persona))
    stats = {
        **counts.as_dict("brainstorm"),
        "instructions_found": found,
        "instructions_duplicate": found - len(unique),
    }
    return unique, stats


def generate_synthetic(llm: ChatModel, personas: Sequence[str], config: SynthConfig) -> SynthResult:
    """Run both stages and return validated, de-duplicated examples with full counts."""
    if not personas:
        raise InvalidInputError("synthetic generation needs at least one persona")
    rng = np.random.default_rng(config.seed)
    tasks = [SYNTH_TASKS[name] for name in config.task_types]
    instructions, stats = _brainstorm(llm, personas, [t for t in tasks if t.brainstormed], config, rng)
    jobs: list[_Job] = []

    def values(task: SynthTask, instruction: str) -> dict[str, str]:
        return example_values(
            task,
            rng,
            instruction=instruction,
            languages=config.languages,
            bitext_languages=config.bitext_languages,
        )

    for task, instruction, persona in instructions:
        for _ in range(config.examples_per_instruction):
            jobs.append(_Job(task, instruction, persona, values(task, instruction), system=False))
    for task in (t for t in tasks if not t.brainstormed):
        for _ in range(config.symmetric_examples):
            persona = personas[int(rng.integers(len(personas)))]
            jobs.append(_Job(task, task.instruction, persona, values(task, task.instruction), system=True))
    conversations: list[list[ChatMessage]] = []
    for job in jobs:
        user: ChatMessage = {
            "role": "user",
            "content": render_prompt(load_prompt(job.task.example_prompt, config.prompts_dir), job.values),
        }
        conversations.append([_persona_message(job.persona), user] if job.system and job.persona else [user])
    pairs, counts = ask_until_valid(
        llm,
        conversations,
        parse_example,
        sampling=config.sampling(config.example_max_tokens),
        max_retries=config.max_retries,
        seed=config.seed * 2 + 2,
        schema=example_schema(config.example_max_chars()),
    )
    examples, duplicates = _to_examples(jobs, pairs, config.task_prefix)
    stats.update(counts.as_dict("example"))
    stats.update(
        personas=len(personas),
        instructions_unique=len(instructions),
        examples_duplicate=duplicates,
        examples=len(examples),
    )
    return SynthResult(examples, [(task.name, text) for task, text, _ in instructions], stats)


def _to_examples(
    jobs: Sequence[_Job], pairs: Sequence[SynthPair | None], prefix: str
) -> tuple[list[TrainingExample], int]:
    examples: list[TrainingExample] = []
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for job, pair in zip(jobs, pairs, strict=True):
        if pair is None:
            continue
        if (pair.query, pair.positive) in seen:
            duplicates += 1
            continue
        seen.add((pair.query, pair.positive))
        language = job.values["language"]
        if job.task.name == "bitext":
            language = f"{job.values['source_language']}-{job.values['target_language']}"
        examples.append(
            TrainingExample(
                query=pair.query,
                positives=(pair.positive,),
                negatives=(pair.hard_negative,),
                task=f"{prefix}-{job.task.name}",
                task_type=job.task.task_type,
                instruction=job.instruction,
                meta={"synth_task": job.task.name, "persona": job.persona, "language": language},
            )
        )
    return examples, duplicates
