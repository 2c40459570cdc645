"""OpenAI-compatible embeddings server (FastAPI + uvicorn), with ``/v1/search`` over a saved
Retriever. Needs the ``server`` extra: ``pip install 'kalm-rag[server]'``.

``kalm_rag.server`` itself imports nothing heavy; FastAPI loads when an app is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "ServerConfig": "kalm_rag.server.config",
    "create_app": "kalm_rag.server.app",
    "run": "kalm_rag.server.main",
    "load_resources": "kalm_rag.server.main",
}

__all__ = ["ServerConfig", "create_app", "load_resources", "run"]

if TYPE_CHECKING:
    from kalm_rag.server.app import create_app
    from kalm_rag.server.config import ServerConfig
    from kalm_rag.server.main import load_resources, run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kalm_rag.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
