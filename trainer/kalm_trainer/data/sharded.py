"""Encoding shared by every process of a multi-process launch (torchrun, accelerate).

Filtering, mining and teacher scoring spend their time embedding texts. Inside
:func:`sharded_encoding`, every encoder that :func:`kalm_trainer.data.embedding.load_encoder`
returns embeds only this process's contiguous slice of each call's texts, and the slices are
all-gathered, so each process ends with the full embeddings (in order) after 1/world of the
work. Every process runs the same step code in lockstep (the same calls with the same texts);
the rest of the step (search, sampling) is cheap next to encoding and runs everywhere, and
only the main process writes the step's output (``pipeline.py``). Outside the context, and
in a single process, the encoder is untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["ShardedEncoder", "sharded_encoding", "sharding_active"]

_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("kalm_sharded_encoding", default=False)


def _group() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sharding_active() -> bool:
    return _ACTIVE.get() and _group()[1] > 1


@contextlib.contextmanager
def sharded_encoding() -> Iterator[None]:
    """Shard the encoding of every :class:`ShardedEncoder` across processes in this block."""
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class ShardedEncoder:
    """Wraps a text encoder; inside :func:`sharded_encoding` each call is split across ranks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # config, dim, ... of the wrapped encoder
        return getattr(self.inner, name)

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self._split(lambda part: self.inner.encode_query(part, **kwargs), texts)

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self._split(lambda part: self.inner.encode_document(part, **kwargs), texts)

    def _split(self, encode: Callable[[list[str]], Any], texts: Sequence[str]) -> Any:
        if not sharding_active():
            return encode(list(texts))
        import torch.distributed as dist

        rank, world = _group()
        lo, hi = len(texts) * rank // world, len(texts) * (rank + 1) // world
        local = np.asarray(encode(list(texts[lo:hi])), dtype=np.float32) if hi > lo else None
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, local)
        arrays = [p for p in parts if p is not None]
        if not arrays:
            return encode([])
        return np.concatenate(arrays, axis=0)
