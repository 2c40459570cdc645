"""Convert plain pair files into training examples.

The shared training data (``shared/data/train/*.jsonl``) has one pair a line::

    {"query": ..., "positive": ..., "lang": ..., "package": ..., "task": "debian-desc"}

``query`` and ``positive`` (or a ``positives`` list) are required; these keys are optional and
kept per line through every later step, the collator and the loss:

- ``negative`` / ``negatives``: given hard negatives (mining keeps them first);
- ``instruction``: the line's own task instruction (instruction-aware models get it);
- ``task_type``: retrieval, reranking, sts, pair_classification, bitext, classification,
  clustering (symmetric types put the instruction / query prompt on both sides);
- ``label``: the class of the query (classification / clustering). A labelled line may have no
  positive yet: the ``label_examples`` step picks one of the same class;
- ``negative_labels``: the class of each negative.

The step's config sets defaults for lines without them. Every other scalar key (``lang``,
``package``, ...) is kept in the example's ``meta``.
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
from kalm_trainer.data.schema import TrainingExample, label_string

__all__ = ["TASK_INSTRUCTIONS", "ConvertPairsConfig", "load_pairs", "pair_to_example", "run_convert_step"]

#: Instructions for the tasks of the shared training data, by task name. A short description
#: is a query-like phrase and the long description is the document that answers it.
TASK_INSTRUCTIONS: dict[str, str] = {
    "debian-desc": "Given a software package's short description, retrieve its full description",
}

_PAIR_KEYS = {
    "query",
    "positive",
    "positives",
    "negative",
    "negatives",
    "task",
    "task_type",
    "instruction",
    "label",
    "negative_labels",
}


@dataclass(frozen=True)
class ConvertPairsConfig(StepConfig):
    #: for lines without their own "instruction"; None: TASK_INSTRUCTIONS[task], else the
    #: task type's default
    instruction: str | None = None
    task: str | None = None  # overrides the file's "task"; needed when lines carry none
    task_type: TaskType = TaskType.RETRIEVAL  # for lines without their own "task_type"
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
    """One pair object -> one example; raises InvalidInputError naming what is wrong.

    The line's own ``instruction`` / ``task_type`` win over the ``instruction`` / ``task_type``
    given here (defaults); ``task`` given here overrides the line's.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"expected a JSON object, got {type(raw).__name__}")
    if not isinstance(raw.get("query"), str):
        raise InvalidInputError("missing or non-string 'query'")
    positives = _positives(raw)
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
    kind = _line_task_type(raw, task_type)
    own = raw.get("instruction")
    if own is not None and (not isinstance(own, str) or not own.strip()):
        raise InvalidInputError("'instruction' must be a non-empty string")
    return TrainingExample(
        query=raw["query"],
        positives=positives,
        negatives=tuple(negatives),
        task=task_name,
        task_type=kind,
        instruction=own or instruction or TASK_INSTRUCTIONS.get(task_name) or DEFAULT_INSTRUCTIONS[kind],
        label=label_string(raw.get("label")),
        negative_labels=_negative_labels(raw, len(negatives)),
        meta=meta,
    )


def _positives(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """``positive`` and/or ``positives``; none only for labelled lines (labelled later)."""
    found: list[Any] = []
    if "positive" in raw:
        found.append(raw["positive"])
    listed = raw.get("positives", [])
    if not isinstance(listed, list):
        raise InvalidInputError("'positives' must be a list of strings")
    found += listed
    if not all(isinstance(p, str) for p in found):
        raise InvalidInputError("'positive' / 'positives' must be strings")
    if not found and raw.get("label") is None:
        raise InvalidInputError(
            "missing or non-string 'positive' (only lines with a 'label' may leave it out)"
        )
    return tuple(found)


def _line_task_type(raw: Mapping[str, Any], default: TaskType) -> TaskType:
    value = raw.get("task_type")
    if value is None:
        return default
    try:
        return TaskType(value)
    except ValueError:
        known = ", ".join(t.value for t in TaskType)
        raise InvalidInputError(f"unknown task_type {value!r}; known: {known}") from None


def _negative_labels(raw: Mapping[str, Any], count: int) -> tuple[Any, ...] | None:
    value = raw.get("negative_labels")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != count:
        raise InvalidInputError(f"'negative_labels' must be a list with one label per negative ({count})")
    return tuple(label_string(v) for v in value)


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
