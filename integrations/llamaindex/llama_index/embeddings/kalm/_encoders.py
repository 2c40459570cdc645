"""One loaded Encoder per (model, device, dtype, options), shared by every KaLMEmbedding.

LlamaIndex apps often build the embedding model more than once (Settings, ingestion pipelines,
tests); loading costs seconds and hundreds of MB, so loads are cached per process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder

_LOCK = threading.Lock()
_LOADED: dict[str, Encoder] = {}


def load_encoder(
    model: str, *, device: str | None, dtype: str | None, model_kwargs: Mapping[str, Any]
) -> Encoder:
    """``Encoder.from_pretrained`` with a process-wide cache (thread-safe; loads at most once)."""
    from kalm_rag.encoder import Encoder

    # repr() of the options is a stable key even for unhashable values (a ModelConfig holds a dict)
    key = repr((model, device, dtype, sorted(model_kwargs.items())))
    with _LOCK:  # held while loading, so two threads asking for one model load it once
        encoder = _LOADED.get(key)
        if encoder is None:
            encoder = Encoder.from_pretrained(model, device=device, dtype=dtype, **model_kwargs)
            _LOADED[key] = encoder
        return encoder
