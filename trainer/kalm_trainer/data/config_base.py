"""Step configs: frozen dataclasses built from plain mappings (a TOML table) or from Python.

``from_mapping`` rejects unknown keys by name and checks types with pydantic, so a recipe
typo (``top_K = 50``) fails loudly instead of silently using the default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from kalm_rag.errors import ConfigError

__all__ = ["StepConfig", "config_to_dict"]


_ADAPTERS: dict[type, Any] = {}


def _adapter(cls: type) -> Any:
    import pydantic

    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = pydantic.TypeAdapter(cls)
    return _ADAPTERS[cls]


class StepConfig:
    """Mixin for frozen dataclass configs: ``Cls.from_mapping({...})`` and ``to_dict()``."""

    # read by pydantic: unknown keys in nested config tables are errors too
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, *, where: str | None = None) -> Self:
        import pydantic

        values = dict(values or {})
        label = where or cls.__name__
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in {label}; valid keys: {sorted(known)}")
        try:
            result: Self = _adapter(cls).validate_python(values)
        except pydantic.ValidationError as exc:
            raise ConfigError(f"invalid {label}: {_describe(exc)}") from None
        return result

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def _describe(exc: Any) -> str:
    parts = []
    for error in exc.errors():
        inner = (error.get("ctx") or {}).get("error")
        if isinstance(inner, ConfigError):  # raised by __post_init__: already a good message
            parts.append(str(inner))
            continue
        loc = ".".join(str(p) for p in error["loc"]) or "(config)"
        if error["type"] == "unexpected_keyword_argument":
            parts.append(f"unknown key {loc!r}")
            continue
        parts.append(f"{loc}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(parts)


def config_to_dict(config: object) -> dict[str, Any]:
    """JSON-ready dict of a dataclass config (tuples become lists) for manifests."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"expected a dataclass config instance, got {type(config).__name__}")

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return config_to_dict(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
