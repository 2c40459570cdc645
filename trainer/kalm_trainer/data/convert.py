"""Convert plain pair files into training examples.

The shared training data (``shared/data/train/*.jsonl``) has one pair a line::

    {"query": ..., "positive": ..., "lang": ..., "package": ..., "task": "debian-desc"}

``query`` and ``positive`` are required; ``negative`` / ``negatives`` are optional; every other
scalar key (``lang``, ``package``, ...) is kept in the example's ``meta``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.instructions import DEFAULT_INSTRUCTIONS, TaskType
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.jsonl import OnError, ReadReport, read_with, write_examples
from kalm_trainer.data.schema import TrainingExample

__all__ = ["TASK_INSTRUCTIONS", "ConvertPairsConfig", "load_pairs", "pair_to_example", "run_convert_step"]

#: Instructions for the tasks of the shared training data, by task name. A short description
#: is a query-like phrase and the long description is the document that answers it.
TASK_INSTRUCTIONS: dict[str, str] = {
    "debian-desc": "Given a software package's short description, retrieve its full description",
}

_PAIR_KEYS = {"query", "positive", "negative", "negatives", "task"}


@dataclass(frozen=True)
class ConvertPairsConfig(StepConfig):
    instruction: str | None = None  # None: TASK_INSTRUCTIONS[task], else the task type's default
    task: str | None = None  # overrides the file's "task"; needed when lines carry none
    task_type: TaskType = TaskType.RETRIEVAL
    on_error: OnError = "raise"

    def __post_init__(self) -> None:
        for name in ("instruction", "task"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{name} must be null or a non-empty string")


def pair_to_example(
    raw: Any,
    *,
    instruction: str | None = None,
    task: str | None = None,
    task_type: TaskType = TaskType.RETRIEVAL,
) -> TrainingExample:
    """One pair object -> one example; raises InvalidInputError naming what is wrong."""
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"expected a JSON object, got {type(raw).__name__}")
    for key in ("query", "positive"):
        if not isinstance(raw.get(key), str):
            raise InvalidInputError(f"missing or non-string {key!r}")
    task_name = task or raw.get("task")
    if not isinstance(task_name, str) or not task_name.strip():
        raise InvalidInputError("no task name: the line has no 'task' and none was configured")
    negatives = raw.get("negatives", [])
    if "negative" in raw:
        negatives = [raw["negative"], *negatives] if isinstance(negatives, list) else negatives
    if not isinstance(negatives, list):
        raise InvalidInputError("'negatives' must be a list of strings")
    meta = {k: v for k, v in raw.items() if k not in _PAIR_KEYS}
    bad_meta = [k for k, v in meta.items() if v is not None and not isinstance(v, str | int | float | bool)]
    if bad_meta:
        raise InvalidInputError(
            f"keys {bad_meta} hold non-scalar values; only scalars can be kept as metadata"
        )
    return TrainingExample(
        query=raw["query"],
        positives=(raw["positive"],),
        negatives=tuple(negatives),
        task=task_name,
        task_type=task_type,
        instruction=instruction or TASK_INSTRUCTIONS.get(task_name) or DEFAULT_INSTRUCTIONS[task_type],
        meta=meta,
    )


def load_pairs(
    paths: str | Path | Sequence[str | Path],
    *,
    instruction: str | None = None,
    task: str | None = None,
    task_type: TaskType | str = TaskType.RETRIEVAL,
    on_error: OnError = "raise",
) -> ReadReport:
    """Read pair JSONL files into examples (errors name file and line, or are counted)."""
    kind = TaskType(task_type)

    def parse(obj: object) -> TrainingExample:
        return pair_to_example(obj, instruction=instruction, task=task, task_type=kind)

    return read_with(paths, parse, on_error=on_error)


def run_convert_step(config: ConvertPairsConfig, inputs: Sequence[Path], output_dir: Path) -> dict[str, Any]:
    report = load_pairs(
        inputs,
        instruction=config.instruction,
        task=config.task,
        task_type=config.task_type,
        on_error=config.on_error,
    )
    written = write_examples(output_dir / "examples.jsonl", report.examples)
    return {**report.counts, "written": written, "skipped_lines": [str(e) for e in report.skipped[:100]]}
