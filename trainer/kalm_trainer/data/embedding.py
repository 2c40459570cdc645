"""What filtering and mining need from an embedding model, and the candidate pools they search.

Any object with ``encode_query`` / ``encode_document`` works (the SDK's ``kalm_rag.Encoder``
does); pure cores take arrays, so they are testable without a model.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from kalm_rag.instructions import TaskType
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.progress import show_encoder_progress

__all__ = [
    "CandidatePool",
    "TextEncoder",
    "build_pool",
    "encode_documents",
    "encode_pool",
    "encode_queries",
    "group_by_task",
    "load_encoder",
    "pool_prompt",
    "takes_instructions",
    "truncated_so_far",
]

FloatArray = npt.NDArray[np.float32]


@runtime_checkable
class TextEncoder(Protocol):
    def encode_query(
        self, texts: Sequence[str], *, instruction: str | None = None, task: Any = None
    ) -> Any: ...

    def encode_document(
        self, texts: Sequence[str], *, task: Any = None, instruction: str | None = None
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class CandidatePool:
    """Unique candidate texts (all positives and negatives of a task) and their ids."""

    texts: tuple[str, ...]
    ids: dict[str, int]

    def id_of(self, text: str) -> int | None:
        return self.ids.get(text)


def build_pool(examples: Sequence[TrainingExample]) -> CandidatePool:
    """Deduplicated positives and negatives, in first-seen order (so ids are reproducible)."""
    ids: dict[str, int] = {}
    for ex in examples:
        for text in ex.candidates:
            ids.setdefault(text, len(ids))
    return CandidatePool(tuple(ids), ids)


def group_by_task(examples: Sequence[TrainingExample]) -> dict[str, list[int]]:
    """Example positions per task name, tasks in first-seen order: each task is its own corpus."""
    groups: dict[str, list[int]] = defaultdict(list)
    for position, ex in enumerate(examples):
        groups[ex.task].append(position)
    return dict(groups)


def _matrix(values: Any, rows: int) -> FloatArray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"encoder returned shape {array.shape}, expected ({rows}, dim)")
    return array


def takes_instructions(encoder: TextEncoder) -> bool:
    """False for SDK encoders of models without an instruction template (MiniLM, e5): they
    were not trained with instructions, so their queries are embedded without one."""
    config = getattr(encoder, "config", None)
    if config is not None and hasattr(config, "instruction_template"):
        return config.instruction_template is not None
    return True


def encode_queries(encoder: TextEncoder, examples: Sequence[TrainingExample]) -> FloatArray:
    """Embed each example's query with its own instruction (grouped so each call is batched)."""
    use_instructions = takes_instructions(encoder)
    groups: dict[tuple[str | None, TaskType], list[int]] = defaultdict(list)
    for position, ex in enumerate(examples):
        groups[(ex.instruction if use_instructions else None, ex.task_type)].append(position)
    out: FloatArray | None = None
    for (instruction, task_type), positions in groups.items():
        texts = [examples[p].query for p in positions]
        progress = show_encoder_progress(encoder, len(texts))
        vectors = _matrix(
            encoder.encode_query(texts, instruction=instruction, task=task_type, **progress), len(texts)
        )
        if out is None:
            out = np.empty((len(examples), vectors.shape[1]), dtype=np.float32)
        out[positions] = vectors
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def pool_prompt(examples: Sequence[TrainingExample]) -> tuple[TaskType, str | None]:
    """The task type and instruction a task's candidate pool is embedded with: the most common
    pair among its examples (a task is normally one type with one instruction; the pool is
    shared, so it gets one prompt). Symmetric types put the instruction on documents too."""
    counts = Counter((ex.task_type, ex.instruction) for ex in examples)
    return counts.most_common(1)[0][0] if counts else (TaskType.RETRIEVAL, None)


def encode_documents(
    encoder: TextEncoder, texts: Sequence[str], task_type: TaskType, instruction: str | None = None
) -> FloatArray:
    """Embed candidate texts as the trainer's collator prefixes them for ``task_type``."""
    progress = show_encoder_progress(encoder, len(texts))
    if instruction is not None and takes_instructions(encoder):
        vectors = encoder.encode_document(list(texts), task=task_type, instruction=instruction, **progress)
    else:
        vectors = encoder.encode_document(list(texts), task=task_type, **progress)
    return _matrix(vectors, len(texts))


def encode_pool(
    encoder: TextEncoder, pool: CandidatePool, task_type: TaskType, instruction: str | None = None
) -> FloatArray:
    return encode_documents(encoder, pool.texts, task_type, instruction)


def truncated_so_far(encoder: TextEncoder) -> int:
    """Texts the (SDK) encoder has truncated to its ``max_length`` so far in this process; a
    step records the difference in its manifest, so cut passages are counted, not silent."""
    return int(getattr(encoder, "truncated_texts", 0))


@functools.lru_cache(maxsize=2)
def load_encoder(
    model: str | None = None, *, device: str | None = None, max_length: int | None = None
) -> TextEncoder:
    """The SDK encoder for a model name/path (``None``: the packaged all-MiniLM-L6-v2).

    ``max_length`` caps tokens per text (``None``: the model's own, 512 for e5); longer texts are
    truncated and the encoder logs how many. Cached: a recipe that filters and then mines with the
    same model and length loads it once.
    """
    from kalm_rag.encoder import Encoder
    from kalm_trainer.data.sharded import ShardedEncoder

    # sharded across processes inside kalm_trainer.data.sharded.sharded_encoding(); else as is
    encoder: TextEncoder = ShardedEncoder(
        Encoder.from_pretrained(model, device=device)
        if max_length is None
        else Encoder.from_pretrained(model, device=device, max_length=max_length)
    )
    return encoder
