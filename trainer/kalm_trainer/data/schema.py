"""The training example: one query, its positives and negatives, and what task it belongs to.

A JSONL line is one example::

    {"query": "...", "positives": ["..."], "negatives": ["..."], "task": "debian-desc",
     "task_type": "retrieval", "instruction": "...", "label": null, "negative_labels": null,
     "teacher_scores": null, "meta": {"lang": "de"}}

Only ``query`` is required in every line. ``positives`` may be empty only for labelled
examples that still wait for example-based labelling (classification / clustering).
Unknown keys are an error (a typo such as ``"positive"`` must not silently lose data);
free-form extras belong in ``meta``.

``label`` is the class of the query (and so of its positives) for classification / clustering
data; ``negative_labels`` (optional, one entry per negative, ``null`` = unknown) the class of
each negative. The trainer masks in-batch candidates of the query's class as false negatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kalm_rag.errors import InvalidInputError
from kalm_rag.instructions import TaskType

__all__ = [
    "EXAMPLE_KEYS",
    "TaskType",
    "TrainingExample",
    "example_from_dict",
    "example_to_dict",
    "label_string",
]

#: Every key a JSONL line may carry.
EXAMPLE_KEYS = frozenset(
    {
        "query",
        "positives",
        "negatives",
        "task",
        "task_type",
        "instruction",
        "label",
        "negative_labels",
        "teacher_scores",
        "meta",
    }
)

MetaValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One contrastive training example.

    ``teacher_scores`` (for distillation) holds one score per candidate, positives first then
    negatives, in the order of those tuples. ``label`` is the class / cluster of the query text
    for classification and clustering data.
    """

    query: str
    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    task: str = "default"
    task_type: TaskType = TaskType.RETRIEVAL
    instruction: str | None = None
    label: str | None = None
    negative_labels: tuple[str | None, ...] | None = None
    teacher_scores: tuple[float, ...] | None = None
    meta: Mapping[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Python callers may pass lists; store tuples so examples stay hashable and immutable.
        for name in ("positives", "negatives", "negative_labels", "teacher_scores"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        problem = _problem(self)
        if problem:
            raise InvalidInputError(problem)

    @property
    def candidates(self) -> tuple[str, ...]:
        """Positives then negatives: the order ``teacher_scores`` refers to."""
        return self.positives + self.negatives

    def with_negatives(
        self, negatives: Sequence[str], labels: Sequence[str | None] | None = None
    ) -> TrainingExample:
        """A copy with new negatives (and their labels, if known); teacher scores no longer line
        up and are removed."""
        known = labels is not None and any(label is not None for label in labels)
        return replace(
            self,
            negatives=tuple(negatives),
            negative_labels=tuple(labels) if known and labels is not None else None,
            teacher_scores=None,
        )

    def negative_label(self, index: int) -> str | None:
        """The class of negative ``index``, or None when unknown."""
        return None if self.negative_labels is None else self.negative_labels[index]


def _problem(ex: TrainingExample) -> str | None:
    """Why ``ex`` is not a valid example, or None."""
    if not isinstance(ex.query, str) or not ex.query.strip():
        return "'query' must be a non-empty string"
    for name in ("positives", "negatives"):
        values = getattr(ex, name)
        if not isinstance(values, tuple) or not all(isinstance(v, str) and v.strip() for v in values):
            return f"'{name}' must be a list of non-empty strings"
    if not ex.positives and ex.label is None:
        return "'positives' is empty; only labelled examples (waiting for labelling) may have no positive"
    if not isinstance(ex.task, str) or not ex.task.strip():
        return "'task' must be a non-empty string"
    if not isinstance(ex.task_type, TaskType):
        return f"'task_type' must be a TaskType, got {ex.task_type!r}"
    for name in ("instruction", "label"):
        value = getattr(ex, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            return f"'{name}' must be null or a non-empty string"
    if ex.negative_labels is not None:
        labels = ex.negative_labels
        if not isinstance(labels, tuple) or not all(
            label is None or (isinstance(label, str) and label.strip()) for label in labels
        ):
            return "'negative_labels' must be null or a list of non-empty strings / nulls"
        if len(labels) != len(ex.negatives):
            return f"'negative_labels' has {len(labels)} values for {len(ex.negatives)} negatives"
    if ex.teacher_scores is not None:
        scores = ex.teacher_scores
        if not all(isinstance(s, float) and math.isfinite(s) for s in scores):
            return "'teacher_scores' must be finite numbers"
        if len(scores) != len(ex.positives) + len(ex.negatives):
            return (
                f"'teacher_scores' has {len(scores)} values but there are "
                f"{len(ex.positives) + len(ex.negatives)} positives + negatives"
            )
    if not isinstance(ex.meta, Mapping) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str | int | float | bool))
        for k, v in ex.meta.items()
    ):
        return "'meta' must be an object of string keys and scalar values"
    return None


def _string_list(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str) or not isinstance(value, list):
        raise InvalidInputError(f"'{key}' must be a list of strings, got {type(value).__name__}")
    return tuple(value)


def label_string(value: Any) -> Any:
    """Integer class ids are common in classification data; labels are compared as strings.
    Anything else is returned as is (and rejected by validation unless it is a string / None)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _label_list(value: Any) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list):
        raise InvalidInputError(f"'negative_labels' must be null or a list, got {type(value).__name__}")
    return tuple(label_string(v) for v in value)


def example_from_dict(raw: Any) -> TrainingExample:
    """Validate one decoded JSON object; raises InvalidInputError naming the problem."""
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - EXAMPLE_KEYS)
    if unknown:
        raise InvalidInputError(
            f"unknown key(s) {unknown}; allowed keys: {sorted(EXAMPLE_KEYS)} (extras go in 'meta')"
        )
    if "query" not in raw:
        raise InvalidInputError("missing required key 'query'")
    task_type_raw = raw.get("task_type", TaskType.RETRIEVAL.value)
    try:
        task_type = TaskType(task_type_raw)
    except ValueError:
        known = ", ".join(t.value for t in TaskType)
        raise InvalidInputError(f"unknown task_type {task_type_raw!r}; known: {known}") from None
    scores_raw = raw.get("teacher_scores")
    scores: tuple[float, ...] | None = None
    if scores_raw is not None:
        if not isinstance(scores_raw, list) or not all(
            isinstance(s, int | float) and not isinstance(s, bool) for s in scores_raw
        ):
            raise InvalidInputError("'teacher_scores' must be null or a list of numbers")
        scores = tuple(float(s) for s in scores_raw)
    meta = raw.get("meta") or {}
    return TrainingExample(
        query=raw["query"],
        positives=_string_list(raw, "positives"),
        negatives=_string_list(raw, "negatives"),
        task=raw.get("task", "default"),
        task_type=task_type,
        instruction=raw.get("instruction"),
        label=label_string(raw.get("label")),
        negative_labels=_label_list(raw.get("negative_labels")),
        teacher_scores=scores,
        meta=dict(meta) if isinstance(meta, Mapping) else meta,
    )


def example_to_dict(ex: TrainingExample) -> dict[str, Any]:
    """The JSON object of one example (inverse of :func:`example_from_dict`)."""
    return {
        "query": ex.query,
        "positives": list(ex.positives),
        "negatives": list(ex.negatives),
        "task": ex.task,
        "task_type": ex.task_type.value,
        "instruction": ex.instruction,
        "label": ex.label,
        "negative_labels": None if ex.negative_labels is None else list(ex.negative_labels),
        "teacher_scores": None if ex.teacher_scores is None else list(ex.teacher_scores),
        "meta": dict(ex.meta),
    }
