"""The KaLM data pipeline: examples and their JSONL files, conversion, ranking-consistency
filtering, hard-negative mining, example-based labelling, task batch sampling, and the step
registry recipes run (``kalm_trainer.data.steps``). Names load lazily (the sampler needs torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "TrainingExample": "kalm_trainer.data.schema",
    "TaskType": "kalm_trainer.data.schema",
    "example_from_dict": "kalm_trainer.data.schema",
    "example_to_dict": "kalm_trainer.data.schema",
    "ReadReport": "kalm_trainer.data.jsonl",
    "read_examples": "kalm_trainer.data.jsonl",
    "write_examples": "kalm_trainer.data.jsonl",
    "load_pairs": "kalm_trainer.data.convert",
    "TASK_INSTRUCTIONS": "kalm_trainer.data.convert",
    "TextEncoder": "kalm_trainer.data.embedding",
    "top_k_search": "kalm_trainer.data.search",
    "best_positive_ranks": "kalm_trainer.data.filtering",
    "filter_ranking_consistency": "kalm_trainer.data.filtering",
    "sample_negatives": "kalm_trainer.data.mining",
    "mine_hard_negatives": "kalm_trainer.data.mining",
    "label_examples": "kalm_trainer.data.labelling",
    "SemiHomogeneousBatchSampler": "kalm_trainer.data.sampler",
    "plan_global_batches": "kalm_trainer.data.sampler",
    "Manifest": "kalm_trainer.data.manifest",
    "STEPS": "kalm_trainer.data.steps",
    "run_step": "kalm_trainer.data.steps",
}

__all__ = [
    "STEPS",
    "TASK_INSTRUCTIONS",
    "Manifest",
    "ReadReport",
    "SemiHomogeneousBatchSampler",
    "TaskType",
    "TextEncoder",
    "TrainingExample",
    "best_positive_ranks",
    "example_from_dict",
    "example_to_dict",
    "filter_ranking_consistency",
    "label_examples",
    "load_pairs",
    "mine_hard_negatives",
    "plan_global_batches",
    "read_examples",
    "run_step",
    "sample_negatives",
    "top_k_search",
    "write_examples",
]

if TYPE_CHECKING:
    from kalm_trainer.data.convert import TASK_INSTRUCTIONS, load_pairs
    from kalm_trainer.data.embedding import TextEncoder
    from kalm_trainer.data.filtering import best_positive_ranks, filter_ranking_consistency
    from kalm_trainer.data.jsonl import ReadReport, read_examples, write_examples
    from kalm_trainer.data.labelling import label_examples
    from kalm_trainer.data.manifest import Manifest
    from kalm_trainer.data.mining import mine_hard_negatives, sample_negatives
    from kalm_trainer.data.sampler import SemiHomogeneousBatchSampler, plan_global_batches
    from kalm_trainer.data.schema import TaskType, TrainingExample, example_from_dict, example_to_dict
    from kalm_trainer.data.search import top_k_search
    from kalm_trainer.data.steps import STEPS, run_step


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kalm_trainer.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
