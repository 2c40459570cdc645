"""False-negative masks from example labels (classification / clustering data).

RECIPE.md, "Loss": for classification and clustering data the positive is another example of
the same class and negatives are examples of other classes, so in-batch items of the query's
class are false negatives and must leave the denominator. Labels are non-negative integer class
ids; a negative label (-1) means "unlabelled" (retrieval data) and never masks anything.

Ids are compared across processes after the all-gather, so they must mean the same class on
every rank: the collator hashes (task, label) with a fixed hash (``collate.label_id``), never
numbers classes per batch slice.
"""

from __future__ import annotations

import torch

from kalm_rag.errors import InvalidInputError

UNLABELLED = -1


def split_labels(labels: torch.Tensor, batch: int, num_negatives: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (query labels (B,), candidate labels (B + B*n,)) in the candidate layout.

    ``labels`` is either (B,): one label per query, shared by its positive (hard negatives are
    then treated as unlabelled), or (B, 1 + n): the query/positive label followed by the label
    of each of its hard negatives.
    """
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise InvalidInputError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.ndim == 1 and labels.shape[0] == batch:
        unknown = torch.full((batch * num_negatives,), UNLABELLED, dtype=labels.dtype, device=labels.device)
        return labels, torch.cat([labels, unknown])
    if labels.ndim == 2 and labels.shape == (batch, 1 + num_negatives):
        return labels[:, 0], torch.cat([labels[:, 0], labels[:, 1:].reshape(-1)])
    raise InvalidInputError(
        f"labels must have shape ({batch},) or ({batch}, {1 + num_negatives}) for a batch of {batch} "
        f"queries with {num_negatives} negatives each, got {tuple(labels.shape)}"
    )


def same_label_mask(query_labels: torch.Tensor, candidate_labels: torch.Tensor) -> torch.Tensor:
    """Boolean (B, C): True where candidate ``c`` shares query ``i``'s label (a false negative).

    Column ``i`` (query ``i``'s own positive) is never masked, and unlabelled items never are.
    """
    batch = query_labels.shape[0]
    same = (query_labels.unsqueeze(1) == candidate_labels.unsqueeze(0)) & (query_labels.unsqueeze(1) >= 0)
    rows = torch.arange(batch, device=same.device)
    same[rows, rows] = False
    return same
