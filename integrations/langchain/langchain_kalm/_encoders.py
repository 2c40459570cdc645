"""One loaded Encoder per (model, device, dtype, options), shared by every embeddings object.

Loading a model costs seconds and hundreds of MB; LangChain code often builds several
embeddings objects (one per chain, retriever or test), so they share the same weights.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kalm_rag.config import ModelConfig
    from kalm_rag.encoder import Encoder

_LOCK = threading.Lock()
# cache key -> (device, dtype, encoder) as asked for when loading
_LOADED: dict[str, tuple[str | None, str | None, Encoder]] = {}
# encoders handed in by users (encoder=...), found again when a saved store is reopened
_GIVEN: weakref.WeakValueDictionary[int, Encoder] = weakref.WeakValueDictionary()


def remember(encoder: Encoder) -> None:
    with _LOCK:
        _GIVEN[id(encoder)] = encoder


def load_encoder(
    model: str | None, *, device: str | None, dtype: str | None, model_kwargs: Mapping[str, Any]
) -> Encoder:
    """``Encoder.from_pretrained`` with a process-wide cache (thread-safe; loads at most once)."""
    from kalm_rag.encoder import Encoder

    # repr() of the options is a stable key even for unhashable values (a ModelConfig holds a dict)
    key = repr((model, device, dtype, sorted(model_kwargs.items())))
    with _LOCK:  # held while loading, so two threads asking for one model load it once
        entry = _LOADED.get(key)
        if entry is None:
            encoder = Encoder.from_pretrained(model, device=device, dtype=dtype, **model_kwargs)
            entry = _LOADED[key] = (device, dtype, encoder)
        return entry[2]


def find_loaded(name: str, config: ModelConfig, *, device: str | None, dtype: str | None) -> Encoder | None:
    """An encoder already in memory for model ``name`` with exactly ``config`` (so reopening a
    saved store reuses the model that built it). A device or dtype request must match how it
    was loaded; without one, an encoder the user handed in also counts."""
    with _LOCK:
        candidates = [e for d, t, e in _LOADED.values() if (d, t) == (device, dtype)]
        if device is None and dtype is None:
            candidates += list(_GIVEN.values())
        for encoder in candidates:
            if encoder.name_or_path == name and encoder.config == config:
                return encoder
    return None


def clear_encoder_cache() -> None:
    """Forget every cached model (their memory is freed once no embeddings object holds them)."""
    with _LOCK:
        _LOADED.clear()
