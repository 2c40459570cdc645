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

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.instructions import DEFAULT_INSTRUCTIONS, TaskType
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.jsonl import OnError, ReadReport, read_with, write_examples
from kalm_trainer.data.schema import TrainingExample, label_string

__all__ = [
    "TASK_INSTRUCTIONS",
    "ConvertPairsConfig",
    "load_pairs",
    "pair_to_example",
    "run_convert_step",
    "sample_and_split",
]

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
    #: > 0: keep at most this many lines per ``sample_by`` group (seeded, file order kept)
    sample: int = 0
    #: a line key kept in meta (e.g. "lang") to sample per value of; "" = the whole input
    sample_by: str = ""
    #: a line key (e.g. "lang"): the task becomes "<task>-<value>", one task per value
    task_by: str = ""
    seed: int = 0
    on_error: OnError = "raise"

    def __post_init__(self) -> None:
        for name in ("instruction", "task"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{name} must be null or a non-empty string")
        if self.sample < 0:
            raise ConfigError(f"sample must be >= 0 (0 = keep every line), got {self.sample}")


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
    examples, counts = sample_and_split(
        report.examples,
        sample=config.sample,
        sample_by=config.sample_by,
        task_by=config.task_by,
        seed=config.seed,
    )
    written = write_examples(output_dir / "examples.jsonl", examples)
    return {
        **report.counts,
        **counts,
        "written": written,
        "skipped_lines": [str(e) for e in report.skipped[:100]],
    }


def sample_and_split(
    examples: Sequence[TrainingExample],
    *,
    sample: int = 0,
    sample_by: str = "",
    task_by: str = "",
    seed: int = 0,
) -> tuple[list[TrainingExample], dict[str, Any]]:
    """Keep at most ``sample`` examples per value of ``meta[sample_by]`` (all when 0; file order
    kept), then rename tasks to ``<task>-<meta[task_by]>``. Returns the examples and counts."""
    counts: dict[str, Any] = {}
    kept = list(examples)
    if sample > 0:
        groups: dict[Any, list[int]] = {}
        for position, ex in enumerate(examples):
            groups.setdefault(ex.meta.get(sample_by) if sample_by else None, []).append(position)
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        for key in sorted(groups, key=str):  # sorted: independent of file order
            members = groups[key]
            picks = rng.choice(len(members), size=min(sample, len(members)), replace=False)
            chosen += [members[i] for i in picks]
        kept = [examples[i] for i in sorted(chosen)]
        counts["sampled_out"] = len(examples) - len(kept)
        counts["sampled_per_group"] = {
            str(k): min(sample, len(v)) for k, v in sorted(groups.items(), key=str)
        }
    if task_by:
        missing = sum(task_by not in ex.meta for ex in kept)
        kept = [
            replace(ex, task=f"{ex.task}-{ex.meta[task_by]}") if task_by in ex.meta else ex for ex in kept
        ]
        counts["task_by_missing"] = missing
        counts["tasks"] = dict(sorted(Counter(ex.task for ex in kept).items()))
    return kept, counts
