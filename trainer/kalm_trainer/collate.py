"""Turn a batch of training examples into model inputs: texts with their prompts, token ids,
a fixed-size candidate group per query, class labels and teacher scores.

Prompts follow the SDK (``kalm_rag.config.ModelConfig``) so training and inference see the same
text: instruction-aware models get ``Instruct: {instruction} \\n Query: `` on queries and, for
symmetric tasks, on passages too (RECIPE.md, "Instructions"); models without a template (e5)
get their fixed ``query: `` / ``passage: `` prompts and ignore the example's instruction.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kalm_rag.config import ModelConfig
from kalm_rag.errors import InvalidInputError
from kalm_rag.instructions import is_symmetric, render_prefix
from kalm_trainer.data.schema import TrainingExample

__all__ = ["EmbeddingCollator", "ExampleDataset", "choose_group", "passage_prefix", "query_prefix"]


class ExampleDataset(torch.utils.data.Dataset[TrainingExample]):
    """A list of examples as a map-style dataset (the batch sampler picks the indices)."""

    def __init__(self, examples: Sequence[TrainingExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> TrainingExample:
        return self.examples[index]


def query_prefix(config: ModelConfig, example: TrainingExample) -> str:
    if config.instruction_template is None:
        return config.query_prompt
    instruction = example.instruction or config.instruction_for(example.task_type)
    return render_prefix(config.instruction_template, instruction)


def passage_prefix(config: ModelConfig, example: TrainingExample) -> str:
    """Plain for retrieval; symmetric tasks carry the example's own instruction on both sides."""
    if config.instruction_template is not None and is_symmetric(example.task_type):
        return query_prefix(config, example)
    return config.document_prompt


def choose_group(example: TrainingExample, num_negatives: int, seed: int) -> tuple[int, list[int]]:
    """Which positive and which negatives (indices into the example's tuples) to train on.

    RECIPE.md, "Loss": group size 1 + n; fewer negatives are re-sampled with duplication. The
    choice depends only on the example and the seed (not on batch order or a counter), so a
    resumed run picks exactly what an uninterrupted one would.
    """
    rng = np.random.default_rng([seed, zlib.crc32(example.query.encode("utf-8"))])
    positive = int(rng.integers(len(example.positives))) if len(example.positives) > 1 else 0
    have = len(example.negatives)
    if num_negatives == 0:
        return positive, []
    if have == 0:
        raise InvalidInputError(
            f"example {example.query[:60]!r} (task {example.task!r}) has no negatives but the stage trains "
            f"with {num_negatives} hard negatives; add a 'mine_negatives' data step or set negatives = 0"
        )
    if have >= num_negatives:
        # keep given order when it already fits: mined files hold exactly n, hardest first
        picks = (
            list(range(num_negatives))
            if have == num_negatives
            else sorted(rng.choice(have, size=num_negatives, replace=False).tolist())
        )
    else:
        picks = list(range(have)) + rng.choice(have, size=num_negatives - have, replace=True).tolist()
    return positive, picks


@dataclass
class EmbeddingCollator:
    """Collate ``TrainingExample`` lists into ``{"query": ..., "passage": ..., ...}`` tensors.

    Passages are laid out group by group: ``[pos_0, neg_0_0 .. neg_0_{n-1}, pos_1, ...]``.
    ``labels`` (B,) holds class ids for labelled (classification/clustering) examples and -1
    elsewhere; ``teacher_scores`` (B, 1 + n) is present when every example carries them.
    """

    tokenizer: Any
    config: ModelConfig
    num_negatives: int = 0
    query_max_length: int = 512
    passage_max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        from kalm_rag.batching import FastTokenizer

        if self.num_negatives < 0:
            raise InvalidInputError(f"num_negatives must be >= 0, got {self.num_negatives}")
        self._query_tokenizer = FastTokenizer(self.tokenizer, self.query_max_length)
        self._passage_tokenizer = FastTokenizer(self.tokenizer, self.passage_max_length)
        self._pad_id = int(self.tokenizer.pad_token_id)

    def __call__(self, examples: Sequence[TrainingExample]) -> dict[str, Any]:
        if not examples:
            raise InvalidInputError("cannot collate an empty batch")
        queries: list[str] = []
        passages: list[str] = []
        scores: list[list[float]] = []
        for ex in examples:
            if not ex.positives:
                raise InvalidInputError(
                    f"example {ex.query[:60]!r} has no positive; run 'label_examples' on labelled data first"
                )
            positive, negatives = choose_group(ex, self.num_negatives, self.seed)
            queries.append(query_prefix(self.config, ex) + ex.query)
            prefix = passage_prefix(self.config, ex)
            passages.append(prefix + ex.positives[positive])
            passages.extend(prefix + ex.negatives[i] for i in negatives)
            if ex.teacher_scores is not None:
                offset = len(ex.positives)
                scores.append(
                    [ex.teacher_scores[positive], *(ex.teacher_scores[offset + i] for i in negatives)]
                )
        batch: dict[str, Any] = {
            "query": self._tokenize(self._query_tokenizer, queries),
            "passage": self._tokenize(self._passage_tokenizer, passages),
            "labels": _label_ids(examples),
        }
        if len(scores) == len(examples):
            batch["teacher_scores"] = torch.tensor(scores, dtype=torch.float32)
        return batch

    def _tokenize(self, tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
        from kalm_rag.batching import pad_batch

        ids, _truncated = tokenizer(texts)
        input_ids, mask = pad_batch(ids, self._pad_id)
        return {"input_ids": input_ids, "attention_mask": mask}


def _label_ids(examples: Sequence[TrainingExample]) -> torch.Tensor:
    """Class ids within the batch: same task and same label -> same id; unlabelled -> -1."""
    ids: dict[tuple[str, str], int] = {}
    out = []
    for ex in examples:
        if ex.label is None:
            out.append(-1)
        else:
            out.append(ids.setdefault((ex.task, ex.label), len(ids)))
    return torch.tensor(out, dtype=torch.long)
