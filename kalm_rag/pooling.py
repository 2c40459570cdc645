"""Pooling of token states into one vector per text (pure torch, no model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from kalm_rag.errors import ConfigError

if TYPE_CHECKING:
    import torch

PoolingMode = Literal["mean", "cls", "last"]
POOLING_MODES: tuple[PoolingMode, ...] = ("mean", "cls", "last")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` (batch, tokens, dim) over the tokens that ``attention_mask`` keeps.

    Works for right and left padding alike: ``cls`` takes each row's first kept token and
    ``last`` its last kept token, wherever the padding sits. Mean pooling is computed in
    float32 so bf16 models do not lose precision in the sum.
    """
    import torch

    if mode not in POOLING_MODES:
        raise ConfigError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
    mask = attention_mask.to(torch.bool)
    if mode == "mean":
        weights = mask.unsqueeze(-1).to(torch.float32)
        summed = (hidden.to(torch.float32) * weights).sum(dim=1)
        return summed / weights.sum(dim=1).clamp(min=1.0)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if mode == "cls":
        # first kept position: smallest index where mask is set
        index = torch.where(mask, positions, mask.shape[1]).min(dim=1).values
    else:
        index = torch.where(mask, positions, -1).max(dim=1).values
    index = index.clamp(0, mask.shape[1] - 1)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, index].to(torch.float32)


def truncate_and_normalize(embeddings: torch.Tensor, *, dim: int | None, normalize: bool) -> torch.Tensor:
    """Matryoshka truncation first, then L2 normalisation (so truncated vectors are unit length)."""
    import torch

    if dim is not None:
        embeddings = embeddings[:, :dim]
    if normalize:
        embeddings = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
    return embeddings
