"""Tokenise once, sort by token length, pad per batch: the core of fast CPU encoding.

Sorting by *token* counts (not characters) keeps texts of equal length together, so little
compute goes to padding; the caller restores the input order afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class FastTokenizer:
    """A truncating, non-padding copy of a transformers tokenizer's Rust backend."""

    def __init__(self, hf_tokenizer: Any, max_length: int) -> None:
        from tokenizers import Tokenizer

        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError("a fast (Rust-backed) tokenizer is required")
        # a private copy: changing truncation on the shared one would leak into user code
        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids per text (special tokens included) and how many texts were truncated."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        truncated = sum(1 for e in encodings if e.overflowing)
        return [e.ids for e in encodings], truncated


#: Most padded tokens per batch on CPU. Measured on AVX-512 cores (benchmarks/results/encode.md):
#: batches above ~3k tokens ran 10-15% slower per token (activations no longer fit in cache), and
#: 1-2k tokens was the sweet spot, so long texts get smaller batches than ``batch_size``.
CPU_TOKEN_BUDGET = 2048


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, *, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (fails fast on OOM).

    A batch holds at most ``batch_size`` texts and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (batch size x its longest text); a text longer than the
    budget still gets a batch of its own.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        size = batch_size
        if max_tokens is not None:
            # sorted longest first, so the first text sets the padded width of the batch
            size = max(1, min(batch_size, max_tokens // max(lengths[order[start]], 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence; returns input_ids and attention_mask (int64)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
