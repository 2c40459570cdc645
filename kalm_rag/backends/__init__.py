"""Fast CPU inference backends: OpenVINO and ONNX Runtime, with bf16 and calibrated int8.

``Encoder.from_pretrained(backend="auto")`` (the default) exports the torch model once to the
fastest backend installed, checks every reduced-precision variant against float32 with the
accuracy guard (:mod:`kalm_rag.backends.guard`), caches export and verdict in the user cache
folder (:mod:`kalm_rag.backends.cache`), and runs the fastest variant that passed. This module
stays light: the backends' own libraries load only when a backend is used.
"""

from __future__ import annotations

from typing import Literal

from kalm_rag.errors import ConfigError

BackendName = Literal["auto", "torch", "openvino", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino", "onnx")
#: Precisions of exported models; "bfloat16" is a run-time setting of the float32 export.
Precision = Literal["float32", "bfloat16", "int8"]
#: Environment variable that sets the default backend (e.g. ``KALM_RAG_BACKEND=torch``).
BACKEND_ENV = "KALM_RAG_BACKEND"


def check_backend(backend: str | None) -> str:
    """Validate a backend name; "auto" (and ``None``) yield to ``$KALM_RAG_BACKEND`` when it is set."""
    import os

    if backend is None or backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "").strip() or "auto"
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend.lower()


__all__ = ["BACKENDS", "BACKEND_ENV", "BackendName", "Precision", "check_backend"]
