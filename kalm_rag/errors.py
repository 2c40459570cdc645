"""Exceptions raised by kalm_rag. Every error names the problem and, where useful, the fix."""

from __future__ import annotations

from typing import Any


class KalmRagError(Exception):
    """Base class for every error kalm_rag raises on purpose."""


class InvalidInputError(KalmRagError, ValueError):
    """Bad user input: empty/None texts, wrong shapes, NaN vectors, malformed files."""


class ModelNotFoundError(KalmRagError, LookupError):
    """A model name, alias or path that cannot be resolved to weights."""


class ConfigError(KalmRagError, ValueError):
    """An invalid model, index or retriever configuration."""


class MissingDependencyError(KalmRagError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise an error that names the install extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            f"{module!r} is not installed; install it with `pip install 'kalm-rag[{extra}]'`"
        ) from exc
