"""Soft labels for distillation: a teacher model scores every example's own candidates.

RECIPE.md, "Stages" (v2.5): contrastive distillation with fine-grained soft labels from a
stronger teacher. The teacher here is any embedding model the SDK loads; its cosine scores of
[positives..., negatives...] per example become ``teacher_scores``, which the loss turns into
a KL term (``LossConfig.distill_*``). A reranker teacher would fill the same field.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from kalm_rag.instructions import TaskType
from kalm_trainer.data.embedding import TextEncoder, encode_documents, encode_queries
from kalm_trainer.data.schema import TrainingExample

__all__ = ["add_teacher_scores"]

_Key = tuple[TaskType, str | None]  # documents are embedded once per task type and instruction


def add_teacher_scores(examples: Sequence[TrainingExample], teacher: TextEncoder) -> list[TrainingExample]:
    """Copies of ``examples`` with ``teacher_scores`` = cosine(query, each candidate)."""
    if not examples:
        return []
    queries = encode_queries(teacher, examples)
    # each unique candidate text is embedded once per (task type, instruction): symmetric tasks
    # prefix documents with the example's own instruction, as the collator does
    texts_by_key: dict[_Key, dict[str, int]] = defaultdict(dict)
    for ex in examples:
        ids = texts_by_key[(ex.task_type, ex.instruction)]
        for text in ex.candidates:
            ids.setdefault(text, len(ids))
    vectors: dict[_Key, np.ndarray] = {
        key: _unit(encode_documents(teacher, list(ids), *key)) for key, ids in texts_by_key.items()
    }
    queries = _unit(np.asarray(queries, np.float32))
    out = []
    for row, ex in enumerate(examples):
        key = (ex.task_type, ex.instruction)
        ids = texts_by_key[key]
        candidates = vectors[key][[ids[t] for t in ex.candidates]]
        scores = candidates @ queries[row]
        out.append(dataclasses.replace(ex, teacher_scores=tuple(float(s) for s in scores)))
    return out


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: np.ndarray = matrix / np.maximum(norms, 1e-12)
    return unit
