"""``retriever.json``: its schema check, the bm25/index consistency check, save revisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kalm_rag.errors import InvalidInputError

if TYPE_CHECKING:
    from kalm_rag.index.base import VectorIndex
    from kalm_rag.index.bm25 import BM25Index

MANIFEST = "retriever.json"
FORMAT_VERSION = 1

_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "encoder": str,
    "dim": int,
    "count": int,
    "revision": str,
    "config": dict,
}
_REQUIRED_FIELDS = ("format_version", "encoder", "dim", "config")


def read_retriever_manifest(folder: Path) -> dict[str, Any]:
    """``retriever.json`` checked field by field; errors name the file and the field."""
    path = folder / MANIFEST
    if not path.is_file():
        raise InvalidInputError(f"{folder} is not a saved retriever ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise InvalidInputError(f"{path} must hold a JSON object, got {type(manifest).__name__}")
    unknown = sorted(set(manifest) - set(_MANIFEST_FIELDS))
    if unknown:
        raise InvalidInputError(f"{path}: unknown field(s) {unknown}; known: {sorted(_MANIFEST_FIELDS)}")
    missing = [name for name in _REQUIRED_FIELDS if name not in manifest]
    if missing:
        raise InvalidInputError(f"{path}: missing field(s) {missing}")
    for name, kind in _MANIFEST_FIELDS.items():
        value = manifest.get(name)
        if name in manifest and (isinstance(value, bool) or not isinstance(value, kind)):
            raise InvalidInputError(f"{path}: field {name!r} has the wrong type ({type(value).__name__})")
    if manifest["format_version"] != FORMAT_VERSION:
        raise InvalidInputError(f"{path}: unsupported format_version {manifest['format_version']!r}")
    if manifest["dim"] < 1 or manifest.get("count", 0) < 0:
        raise InvalidInputError(f"{path}: fields 'dim' and 'count' must be positive")
    return manifest


def check_bm25_matches(folder: Path, bm25: BM25Index, index: VectorIndex) -> None:
    """bm25/ must index the same items as index/ (a sample of ids is checked)."""
    if len(bm25) != len(index):
        raise InvalidInputError(
            f"retriever at {folder} is damaged: bm25/ holds {len(bm25)} items, index/ holds {len(index)}"
        )
    ids = bm25.ids()
    sample = ids[:500] + ids[-500:] if len(ids) > 1000 else ids
    missing = [i for i, item in zip(sample, index.get(sample), strict=True) if item is None]
    if missing:
        raise InvalidInputError(
            f"retriever at {folder} is damaged: bm25/ holds ids that index/ does not ({missing[:3]})"
        )


def resolved(path: Path) -> Path:
    return path.expanduser().resolve()


def saved_revision(folder: Path) -> str | None:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    revision = data.get("revision") if isinstance(data, dict) else None
    return revision if isinstance(revision, str) else None
