"""Ask an LLM, parse its replies, and re-ask for the ones that did not parse, with counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kalm_trainer.synth.llm import ChatMessage, ChatModel, Sampling
from kalm_trainer.synth.parse import MalformedOutput

__all__ = ["StageCounts", "ask_until_valid"]

T = TypeVar("T")


@dataclass(slots=True)
class StageCounts:
    """What happened in one generation stage; ``requested == ok + dropped`` always."""

    requested: int = 0
    ok: int = 0
    malformed: int = 0  # unusable replies, every attempt counted
    malformed_content: int = 0  # ... of them: valid JSON of the right shape, unusable text
    first_try_json_ok: int = 0  # jobs whose first reply had the right JSON shape (usable or not)
    request_errors: int = 0  # requests the backend could not answer
    retries: int = 0  # re-asks sent
    recovered: int = 0  # jobs that succeeded on a retry
    dropped: int = 0  # jobs that failed every attempt
    constrained: bool = False  # the backend decoded under the stage's JSON schema
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def first_try_ok(self) -> int:
        return self.ok - self.recovered

    @property
    def first_try_rate(self) -> float:
        """Share of jobs whose first reply parsed (1.0 for a stage with no jobs)."""
        return self.first_try_ok / self.requested if self.requested else 1.0

    @property
    def first_try_json_rate(self) -> float:
        return self.first_try_json_ok / self.requested if self.requested else 1.0

    def as_dict(self, prefix: str) -> dict[str, Any]:
        names: tuple[str, ...] = ("requested", "ok", "first_try_ok", "first_try_json_ok", "malformed")
        names += ("malformed_content",)
        names += ("request_errors", "retries", "recovered", "dropped")
        out: dict[str, Any] = {f"{prefix}_{name}": getattr(self, name) for name in names}
        out[f"{prefix}_first_try_rate"] = round(self.first_try_rate, 4)
        out[f"{prefix}_first_try_json_rate"] = round(self.first_try_json_rate, 4)
        out[f"{prefix}_constrained"] = self.constrained
        out[f"{prefix}_malformed_reasons"] = dict(self.reasons.most_common())
        return out


def ask_until_valid(
    llm: ChatModel,
    conversations: Sequence[Sequence[ChatMessage]],
    parse: Callable[[str | None], T],
    *,
    sampling: Sampling,
    max_retries: int,
    seed: int,
    schema: dict[str, Any] | None = None,
) -> tuple[list[T | None], StageCounts]:
    """One parsed result per conversation (None where every attempt failed).

    ``schema`` is handed to the backend, which constrains decoding to it where it can;
    ``parse`` checks every reply either way.

    A retry re-sends the same conversation with a new seed: with sampling on, the model
    answers differently. With temperature 0 a retry only helps against transient errors.
    """
    # backends say whether they decode under the schema with a ``constrain`` attribute
    constrained = schema is not None and bool(getattr(llm, "constrain", False))
    counts = StageCounts(requested=len(conversations), constrained=constrained)
    results: list[T | None] = [None] * len(conversations)
    todo = list(range(len(conversations)))
    for attempt in range(max_retries + 1):
        if not todo:
            break
        if attempt:
            counts.retries += len(todo)
        batch = [conversations[i] for i in todo]
        replies = llm.chat(batch, sampling=sampling, seed=seed * 1_000 + attempt, schema=schema)
        failed = []
        for index, reply in zip(todo, replies, strict=True):
            if reply is None:
                counts.request_errors += 1
                failed.append(index)
                continue
            try:
                results[index] = parse(reply)
            except MalformedOutput as exc:
                counts.malformed += 1
                counts.malformed_content += exc.content
                counts.first_try_json_ok += exc.content and attempt == 0
                counts.reasons[exc.reason] += 1
                failed.append(index)
                continue
            counts.ok += 1
            counts.first_try_json_ok += attempt == 0
            counts.recovered += attempt > 0
        todo = failed
    counts.dropped = len(todo)
    return results, counts
