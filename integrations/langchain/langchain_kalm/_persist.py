"""Manifests of a saved KaLMVectorStore: its own, and the ``kalm_rag.Retriever`` one it exports."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kalm_rag.errors import InvalidInputError
from langchain_kalm.embeddings import KaLMEmbeddings


def retriever_manifest(embedding: KaLMEmbeddings, index_dim: int) -> tuple[str, dict[str, Any]] | None:
    """(file name, content) that lets ``kalm_rag.Retriever.load`` open the saved folder, or
    ``None`` when a Retriever could not reproduce these vectors (truncated or re-normalised)."""
    from kalm_rag.retriever import FORMAT_VERSION, MANIFEST, RetrieverConfig

    encoder = embedding.client
    if embedding.truncate_dim is not None or embedding.normalize is not None or index_dim != encoder.dim:
        return None
    config = RetrieverConfig(
        instruction=embedding.instruction,
        task=embedding.task,
        hybrid_bm25=False,  # the store keeps no BM25 index
        batch_size=embedding.batch_size,
    )
    content = {
        "format_version": FORMAT_VERSION,
        "encoder": encoder.name_or_path,
        "dim": encoder.dim,
        "config": asdict(config),
    }
    return MANIFEST, content


def read_store_manifest(path: Path, version: int) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidInputError(f"{path.parent} is not a saved KaLMVectorStore ({path.name} is missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise InvalidInputError(f"{path} must hold a JSON object")
    if manifest.get("format_version") != version:
        raise InvalidInputError(f"{path}: unsupported format_version {manifest.get('format_version')!r}")
    return manifest
