"""Index construction by backend name, and the saved folder of a LlamaIndex KaLMVectorStore:
``index/`` (the kalm_rag index) and ``vectorstore.json`` (backend, metric, node -> document)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import VectorIndex

MANIFEST = "vectorstore.json"
FORMAT_VERSION = 1


def make_index(backend: str, dim: int, *, metric: str, options: Mapping[str, Any]) -> VectorIndex:
    """A new empty index of the named backend; ``options`` go to its constructor."""
    if backend == "brute":
        from kalm_rag.index.brute import BruteForceIndex

        return BruteForceIndex(dim, metric=metric, **options)
    if backend == "hnsw":
        from kalm_rag.index.hnsw import HnswIndex

        return HnswIndex(dim, metric=metric, **options)
    if backend == "qdrant":
        from kalm_rag.index.qdrant import QdrantIndex

        return QdrantIndex(dim, metric=metric, **options)
    raise ConfigError(f"unknown index backend {backend!r}; choose one of brute, hnsw, qdrant")


def check_local(fs: Any) -> None:
    if fs is not None and "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        raise ConfigError("KaLMVectorStore persists to the local file system only (fs must be None or local)")


def save(
    folder: Path, index: VectorIndex | None, *, backend: str, metric: str, nodes: Mapping[str, str | None]
) -> None:
    from kalm_rag._atomic import atomic_folder

    with atomic_folder(folder) as tmp:
        if index is not None:
            index.save(tmp / "index")
        manifest = {
            "format_version": FORMAT_VERSION,
            "backend": backend,
            "metric": metric,
            "nodes": dict(nodes),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest) + "\n", encoding="utf-8")


def load(folder: Path, index_options: Mapping[str, Any]) -> tuple[dict[str, Any], VectorIndex | None]:
    from kalm_rag._atomic import recover_folder
    from kalm_rag.index.persist import load_index

    recover_folder(folder)  # a save that crashed between its two renames
    path = folder / MANIFEST
    if not path.is_file():
        raise InvalidInputError(f"{folder} is not a saved KaLMVectorStore ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidInputError(f"{path}: not a version-{FORMAT_VERSION} KaLMVectorStore manifest")
    if not isinstance(manifest.get("nodes"), dict):
        raise InvalidInputError(f"{path}: field 'nodes' is missing or not an object")
    index = load_index(folder / "index", **index_options) if (folder / "index").is_dir() else None
    if index is not None and len(index) != len(manifest["nodes"]):
        raise InvalidInputError(f"{folder} is damaged: the index and the node list disagree")
    return manifest, index
