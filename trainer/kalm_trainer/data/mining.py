"""Hard-negative mining (KaLM / FlagEmbedding style): sample ``n`` negatives from a window of
ranks (default 50-100) of an encoder's retrieval over the task's candidate pool.

The window skips the very top ranks on purpose: those are often unlabelled positives (false
negatives). Positives and the query's own text are never negatives; given negatives stay first.
For labelled (classification / clustering) examples, texts of the query's own class are never
negatives either, and every negative keeps its class in ``negative_labels`` (for the loss's
false-negative mask).
When the window holds too few candidates, the picks are re-sampled with duplication so every
example ends with exactly ``n`` negatives (the trainer's group size is fixed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.embedding import (
    CandidatePool,
    TextEncoder,
    build_pool,
    encode_pool,
    encode_queries,
    group_by_task,
    load_encoder,
    pool_prompt,
    truncated_so_far,
)
from kalm_trainer.data.jsonl import OnError, read_examples, write_examples
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.data.search import top_k_search
from kalm_trainer.progress import ProgressLog

__all__ = [
    "MineConfig",
    "MinedNegatives",
    "MiningResult",
    "mine_hard_negatives",
    "run_mine_step",
    "sample_negatives",
]


@dataclass(frozen=True)
class MineConfig(StepConfig):
    n: int = 7
    window: tuple[int, int] = (50, 100)  # ranks [start, end), 0-based, of the raw retrieval
    seed: int = 0
    model: str | None = None  # Encoder name or path; None = the packaged all-MiniLM-L6-v2
    device: str | None = None
    # tokens per text for this step's encoder (None: the model's own); shorter is much faster on CPU
    max_length: int | None = None
    on_error: OnError = "raise"

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {self.max_length}")
        check_mining_args(self.n, self.window)


def check_mining_args(n: int, window: tuple[int, int]) -> None:
    if n < 1:
        raise ConfigError(f"n (negatives per example) must be >= 1, got {n}")
    if len(window) != 2 or not 0 <= window[0] < window[1]:
        raise ConfigError(f"window must be (start, end) with 0 <= start < end, got {window}")


@dataclass(frozen=True, slots=True)
class MinedNegatives:
    ids: tuple[int, ...]  # given negatives first, then the mined ones
    mined: int  # how many came from the window (distinct)
    duplicated: int  # how many are repeats added to reach n


def sample_negatives(
    ranked_ids: Sequence[int],
    *,
    n: int,
    window: tuple[int, int],
    exclude: Collection[int],
    given: Sequence[int] = (),
    rng: np.random.Generator,
) -> MinedNegatives:
    """Pick negatives for one query from its ranking (pool ids, best first)."""
    check_mining_args(n, window)
    keep = list(given)[:n]
    blocked = set(exclude) | set(keep)
    candidates = [i for i in dict.fromkeys(ranked_ids[window[0] : window[1]]) if i not in blocked]
    need = n - len(keep)
    if need <= 0:
        return MinedNegatives(tuple(keep), 0, 0)
    if len(candidates) >= need:
        picked = [candidates[i] for i in rng.choice(len(candidates), size=need, replace=False)]
        return MinedNegatives(tuple(keep + picked), need, 0)
    source = candidates or keep
    if not source:
        return MinedNegatives((), 0, 0)
    extra = [source[i] for i in rng.choice(len(source), size=need - len(candidates), replace=True)]
    return MinedNegatives(tuple(keep + candidates + extra), len(candidates), len(extra))


@dataclass(slots=True)
class MiningResult:
    examples: list[TrainingExample]
    counts: Counter[str] = field(default_factory=Counter)


def mine_hard_negatives(
    examples: Sequence[TrainingExample],
    encoder: TextEncoder,
    *,
    n: int = 7,
    window: tuple[int, int] = (50, 100),
    seed: int = 0,
    device: str | None = None,
) -> MiningResult:
    """Give every example exactly ``n`` negatives (given ones first, then mined)."""
    check_mining_args(n, window)
    out: list[TrainingExample | None] = [None] * len(examples)
    counts: Counter[str] = Counter()
    progress = ProgressLog("mine_negatives", len(examples))
    for task, positions in group_by_task(examples).items():
        group = [examples[p] for p in positions]
        if any(not ex.positives for ex in group):
            raise InvalidInputError(f"task {task!r} has examples without positives; label them before mining")
        pool = build_pool(group)
        _, ranked = top_k_search(
            encode_queries(encoder, group),
            encode_pool(encoder, pool, *pool_prompt(group)),
            window[1],
            device=device,
        )
        label_of = _pool_labels(group, pool)
        for row, (position, ex) in enumerate(zip(positions, group, strict=True)):
            exclude = {pool.ids[t] for t in ex.positives}
            if ex.query in pool.ids:
                exclude.add(pool.ids[ex.query])
            if ex.label is not None:
                # classification / clustering: a text of the query's own class is no negative
                same = {i for i in ranked[row][window[0] : window[1]].tolist() if label_of.get(i) == ex.label}
                counts["same_label_excluded"] += len(same - exclude)
                exclude |= same
            # a per-example generator: the result does not depend on batching or task order
            rng = np.random.default_rng([seed, position])
            picked = sample_negatives(
                ranked[row].tolist(),
                n=n,
                window=window,
                exclude=exclude,
                given=[pool.ids[t] for t in ex.negatives],
                rng=rng,
            )
            counts["mined"] += picked.mined
            counts["duplicated"] += picked.duplicated
            counts["examples_padded_with_duplicates"] += picked.duplicated > 0
            counts["examples_without_negatives"] += not picked.ids
            counts["given_negatives_truncated"] += max(0, len(ex.negatives) - n)
            counts["teacher_scores_cleared"] += ex.teacher_scores is not None
            out[position] = ex.with_negatives(
                [pool.texts[i] for i in picked.ids], [label_of.get(i) for i in picked.ids]
            )
        progress.update(len(group), f"task {task}: {len(group)} queries, {len(pool.texts)} candidates")
    return MiningResult([ex for ex in out if ex is not None], counts)


def _pool_labels(group: Sequence[TrainingExample], pool: CandidatePool) -> dict[int, str]:
    """Known class of pool texts (labelled data): a labelled query's positives (and the query
    itself, when it is a candidate of another example) have its label; negatives have their
    ``negative_labels``. First seen wins where a text carries two labels."""
    label_of: dict[int, str] = {}
    for ex in group:
        if ex.label is not None:
            for text in (ex.query, *ex.positives):
                if text in pool.ids:
                    label_of.setdefault(pool.ids[text], ex.label)
        for index, text in enumerate(ex.negatives):
            label = ex.negative_label(index)
            if label is not None:
                label_of.setdefault(pool.ids[text], label)
    return label_of


def run_mine_step(config: MineConfig, inputs: Sequence[Path], output_dir: Path) -> dict[str, Any]:
    """Step shell: read inputs, mine with the configured encoder, write ``examples.jsonl``."""
    report = read_examples(inputs, on_error=config.on_error)
    encoder = load_encoder(config.model, device=config.device, max_length=config.max_length)
    truncated_before = truncated_so_far(encoder)
    result = mine_hard_negatives(
        report.examples, encoder, n=config.n, window=config.window, seed=config.seed, device=config.device
    )
    written = write_examples(output_dir / "examples.jsonl", result.examples)
    return {
        **report.counts,
        "written": written,
        **result.counts,
        # texts cut to the encoder's max_length while ranking (this process's share)
        "texts_truncated": truncated_so_far(encoder) - truncated_before,
        "skipped_lines": [str(e) for e in report.skipped[:100]],
    }
