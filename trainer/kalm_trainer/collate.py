"""Turn a batch of training examples into model inputs: texts with their prompts, token ids,
a fixed-size candidate group per query, class labels and teacher scores.

Prompts come from the SDK (``ModelConfig.query_prefix`` / ``document_prefix``) so training and
inference see the same text. Instruction-aware models get ``Instruct: {instruction} \\n Query: ``
with the example's own instruction on queries, and for symmetric task types (sts,
pair_classification, bitext, classification, clustering) on passages too; retrieval and
reranking passages stay plain (RECIPE.md, "Instructions"). Models without a template (e5) ignore
the instruction: ``query: `` / ``passage: `` for asymmetric tasks, ``query: `` on both sides for
symmetric ones (e5's model card).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kalm_rag.config import ModelConfig
from kalm_rag.errors import InvalidInputError
from kalm_trainer.data.schema import TrainingExample

__all__ = [
    "UNLABELLED",
    "EmbeddingCollator",
    "ExampleDataset",
    "candidate_labels",
    "choose_group",
    "label_id",
    "passage_prefix",
    "query_prefix",
]

#: The label id of an unlabelled text (retrieval data): never masked.
UNLABELLED = -1


class ExampleDataset(torch.utils.data.Dataset[TrainingExample]):
    """A list of examples as a map-style dataset (the batch sampler picks the indices)."""

    def __init__(self, examples: Sequence[TrainingExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> TrainingExample:
        return self.examples[index]


def _instruction(config: ModelConfig, example: TrainingExample) -> str | None:
    # models trained without instructions (no template) keep their fixed prompts
    return example.instruction if config.instruction_template is not None else None


def query_prefix(config: ModelConfig, example: TrainingExample) -> str:
    """The query side's prefix: the example's instruction in the model's template, or the
    model's query prompt."""
    return config.query_prefix(instruction=_instruction(config, example), task=example.task_type)


def passage_prefix(config: ModelConfig, example: TrainingExample) -> str:
    """Plain / the document prompt for retrieval and reranking; symmetric task types give
    passages the query side's prefix."""
    return config.document_prefix(task=example.task_type, instruction=_instruction(config, example))


def label_id(task: str, label: str | None) -> int:
    """A class id that is the same in every process and run: a 63-bit blake2b hash of
    (task, label); :data:`UNLABELLED` for None. (Python's ``hash`` of a string is salted per
    process, so ranks would disagree.) Labels of different tasks never match."""
    if label is None:
        return UNLABELLED
    digest = hashlib.blake2b(f"{task}\x00{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def candidate_labels(
    examples: Sequence[TrainingExample], groups: Sequence[tuple[int, Sequence[int]]]
) -> torch.Tensor:
    """Class ids (B, 1 + n): each query's label (shared by its positive), then the label of each
    chosen negative (``groups``: the :func:`choose_group` picks); -1 where unknown."""
    rows = [
        [label_id(ex.task, ex.label), *(label_id(ex.task, ex.negative_label(i)) for i in negatives)]
        for ex, (_positive, negatives) in zip(examples, groups, strict=True)
    ]
    return torch.tensor(rows, dtype=torch.long)


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
    ``labels`` (B, 1 + n) holds the class id (:func:`label_id`) of each query / positive and of
    each hard negative, -1 where unknown (retrieval data); ``teacher_scores`` (B, 1 + n) is
    present when every example carries them.
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
        groups: list[tuple[int, list[int]]] = []
        for ex in examples:
            if not ex.positives:
                raise InvalidInputError(
                    f"example {ex.query[:60]!r} has no positive; run 'label_examples' on labelled data first"
                )
            positive, negatives = choose_group(ex, self.num_negatives, self.seed)
            groups.append((positive, negatives))
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
            "labels": candidate_labels(examples, groups),
        }
        if len(scores) == len(examples):
            batch["teacher_scores"] = torch.tensor(scores, dtype=torch.float32)
        return batch

    def _tokenize(self, tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
        from kalm_rag.batching import pad_batch

        ids, _truncated = tokenizer(texts)
        input_ids, mask = pad_batch(ids, self._pad_id)
        return {"input_ids": input_ids, "attention_mask": mask}
