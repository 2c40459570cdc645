"""What every backend shares: the runner protocol, the traced wrapper, example inputs, batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
#: Inputs and output of every exported model: the names sentence-transformers' (optimum's)
#: feature-extraction backends look for, so the same files load there too.
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "last_hidden_state"


class Runner(Protocol):
    """A compiled model: padded token ids and mask in, token states (batch, tokens, dim) out."""

    backend: str
    precision: str

    def __call__(self, input_ids: IntArray, attention_mask: IntArray) -> FloatArray: ...


def traceable(model: Any) -> torch.nn.Module:
    """The backbone as a module of (input_ids, attention_mask) -> last_hidden_state."""
    import torch

    class _LastHiddenState(torch.nn.Module):
        def __init__(self, backbone: Any) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            return out

    wrapped = _LastHiddenState(model)
    wrapped.eval()
    return wrapped


def example_inputs(pad_id: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, one right-padded: a padded example keeps the mask in the traced graph (an
    all-ones mask lets transformers drop it while tracing, and padded batches would then be wrong).
    """
    import torch

    low = min(5, vocab_size - 1)
    ids = torch.randint(low, vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[1, 5:] = pad_id
    mask[1, 5:] = 0
    return ids, mask


def padded_batches(
    token_ids: Sequence[Sequence[int]], pad_id: int, batch_size: int = 8
) -> list[dict[str, IntArray]]:
    """Length-sorted, right-padded numpy batches (calibration and guard inputs)."""
    from kalm_rag.batching import length_sorted_batches, pad_batch

    out = []
    for batch in length_sorted_batches([len(ids) for ids in token_ids], batch_size, max_tokens=2048):
        ids, mask = pad_batch([token_ids[i] for i in batch], pad_id)
        out.append({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return out
