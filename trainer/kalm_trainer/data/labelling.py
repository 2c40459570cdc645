"""Example-based multi-class labelling (KaLM v2) for classification and clustering data.

A labelled text becomes a query whose positive is another text of the same label and whose
negatives are texts of other labels, so class structure trains like retrieval. Examples are
labelled within their own task only; texts are compared exactly. Each negative's class is kept
in ``negative_labels``, so the loss can mask in-batch candidates of a query's own class.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kalm_rag.errors import ConfigError
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.embedding import group_by_task
from kalm_trainer.data.jsonl import OnError, read_examples, write_examples
from kalm_trainer.data.schema import TrainingExample

__all__ = ["LabelConfig", "LabelResult", "label_examples", "run_label_step"]


@dataclass(frozen=True)
class LabelConfig(StepConfig):
    n_positives: int = 1
    n_negatives: int = 7
    seed: int = 0
    on_error: OnError = "raise"

    def __post_init__(self) -> None:
        if self.n_positives < 1 or self.n_negatives < 0:
            raise ConfigError(
                f"need n_positives >= 1 and n_negatives >= 0, got {self.n_positives}, {self.n_negatives}"
            )


@dataclass(slots=True)
class LabelResult:
    examples: list[TrainingExample]
    counts: Counter[str] = field(default_factory=Counter)


def _pick_same(texts: Sequence[str], k: int, rng: np.random.Generator, *, avoid: str) -> list[str]:
    """Up to ``k`` distinct texts of ``texts`` other than ``avoid``."""
    chosen = [texts[i] for i in rng.choice(len(texts), size=min(len(texts), k + 1), replace=False)]
    return [t for t in chosen if t != avoid][:k]


def _pick_other(
    flat: Sequence[str], span: tuple[int, int], k: int, rng: np.random.Generator
) -> tuple[list[int], int]:
    """``k`` positions in ``flat`` outside ``span`` (the query's own label), distinct while there
    are enough, then re-sampled with duplication; returns the positions and how many are repeats."""
    size = span[1] - span[0]
    n_other = len(flat) - size
    if n_other == 0 or k == 0:
        return [], 0
    ids = rng.choice(n_other, size=min(k, n_other), replace=False)
    repeats = max(0, k - n_other)
    if repeats:
        ids = np.concatenate([ids, rng.choice(n_other, size=repeats, replace=True)])
    # map ids of the "everything but my label" range back onto the label-sorted list
    ids = np.where(ids >= span[0], ids + size, ids)
    return [int(i) for i in ids], repeats


def label_examples(
    examples: Sequence[TrainingExample], *, n_positives: int = 1, n_negatives: int = 7, seed: int = 0
) -> LabelResult:
    """Fill positives/negatives of labelled examples that have no positives yet.

    Examples with no label, or that already have positives, pass through unchanged (counted).
    A text whose label has no other text cannot get a positive and is dropped (counted).
    Negatives are re-sampled with duplication when other labels hold fewer than ``n_negatives``.
    Output keeps the input order.
    """
    result = LabelResult(examples=[])
    out: list[TrainingExample | None] = [None] * len(examples)
    for positions in group_by_task(examples).values():
        by_label: dict[str, list[str]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        for p in positions:
            ex = examples[p]
            if ex.label is not None and not ex.positives and (ex.label, ex.query) not in seen:
                seen.add((ex.label, ex.query))
                by_label[ex.label].append(ex.query)
        flat = [t for texts in by_label.values() for t in texts]
        flat_labels = [label for label, texts in by_label.items() for _ in texts]
        spans: dict[str, tuple[int, int]] = {}
        for label, texts in by_label.items():
            begin = spans[next(reversed(spans))][1] if spans else 0
            spans[label] = (begin, begin + len(texts))
        for p in positions:
            ex = examples[p]
            if ex.label is None or ex.positives:
                result.counts["passed_through"] += 1
                out[p] = ex
                continue
            rng = np.random.default_rng([seed, p])
            positives = _pick_same(by_label[ex.label], n_positives, rng, avoid=ex.query)
            if not positives:
                result.counts["dropped_single_text_label"] += 1
                continue
            picks, repeats = _pick_other(flat, spans[ex.label], n_negatives, rng)
            negatives = [flat[i] for i in picks]
            result.counts["padded_with_duplicates"] += repeats > 0
            result.counts["without_negatives"] += not negatives and n_negatives > 0
            result.counts["labelled"] += 1
            out[p] = replace(
                ex,
                positives=tuple(positives),
                negatives=tuple(negatives),
                negative_labels=tuple(flat_labels[i] for i in picks) if picks else None,
                teacher_scores=None,
            )
    result.examples = [ex for ex in out if ex is not None]
    return result


def run_label_step(config: LabelConfig, inputs: Sequence[Path], output_dir: Path) -> dict[str, Any]:
    report = read_examples(inputs, on_error=config.on_error)
    result = label_examples(
        report.examples, n_positives=config.n_positives, n_negatives=config.n_negatives, seed=config.seed
    )
    written = write_examples(output_dir / "examples.jsonl", result.examples)
    return {
        **report.counts,
        "written": written,
        **result.counts,
        "skipped_lines": [str(e) for e in report.skipped[:100]],
    }
