"""Atomic, crash-safe index folders.

Layout of a saved index at ``path``::

    path/index.json        manifest: format, version, backend, dim, metric, count, data, config
    path/v-<hex>/          the data folder the manifest names (backend files)

Saving writes a complete new data folder under a temporary name, fsyncs every file and the
folder, renames it to ``v-<hex>``, then swaps in a new ``index.json`` with ``os.replace``
(atomic on POSIX) and fsyncs the parent. Until that replace, ``index.json`` still names the
old, complete data folder; after it, the new one. A kill -9 at any moment therefore leaves a
loadable index: the old one or the new one, never a mix. Old and half-written folders are
removed by the next successful save.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from kalm_rag.errors import InvalidInputError

T = TypeVar("T")
MANIFEST = "index.json"
FORMAT = "kalm-rag-index"
FORMAT_VERSION = 1
_DATA_PREFIX = "v-"
_TMP_PREFIX = ".tmp-"
LOCK_FILE = ".kalm-rag.lock"


def save_index_dir(
    path: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    write: Callable[[Path], Mapping[str, Any] | None],
) -> Path:
    """Atomically replace the index folder at ``path``.

    ``write(folder)`` fills the new data folder and may return extra manifest fields.
    """
    from kalm_rag._atomic import path_lock

    root = Path(path)
    _check_target(root)
    root.mkdir(parents=True, exist_ok=True)
    # One writer at a time across processes: a second save would otherwise delete the data
    # folder the first one's index.json is about to name (see _remove_stale).
    with path_lock(root / LOCK_FILE, root):
        return _save_locked(root, manifest, write)


def _save_locked(
    root: Path, manifest: Mapping[str, Any], write: Callable[[Path], Mapping[str, Any] | None]
) -> Path:
    _check_target(root)
    name = f"{_DATA_PREFIX}{uuid.uuid4().hex}"
    tmp = root / f"{_TMP_PREFIX}{name}"
    tmp.mkdir()
    try:
        extra: Mapping[str, Any] = write(tmp) or {}
        _fsync_tree(tmp)
        os.rename(tmp, root / name)
        _fsync_dir(root)
        body = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, **extra, "data": name}
        write_json_atomic(root / MANIFEST, body)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(root / name, ignore_errors=True)
        raise
    _remove_stale(root, keep=name)
    return root / name


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """The manifest of the index at ``path`` and the data folder it names."""
    root = Path(path)
    file = root / MANIFEST
    if not file.is_file():
        raise InvalidInputError(f"no saved index at {root}: {MANIFEST} is missing")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"unreadable index manifest {file}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInputError(f"{file} is not a kalm-rag index manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise InvalidInputError(
            f"{file} was written by a newer kalm-rag (format {manifest['format_version']}); upgrade kalm-rag"
        )
    _check_fields(manifest, file)
    data = root / str(manifest.get("data", ""))
    if not data.is_dir():
        raise InvalidInputError(f"index at {root} is damaged: data folder {data.name!r} is missing")
    return manifest, data


# fields every backend's manifest has, with their types (backends may add their own fields)
_FIELDS: dict[str, type] = {
    "format_version": int,
    "backend": str,
    "dim": int,
    "metric": str,
    "count": int,
    "data": str,
    "config": dict,
}
_OPTIONAL = ("config",)


def _check_fields(manifest: Mapping[str, Any], file: Path) -> None:
    optional = (*_OPTIONAL, "dim", "metric") if manifest.get("backend") == "bm25" else _OPTIONAL
    for name, kind in _FIELDS.items():
        if name not in manifest:
            if name in optional:
                continue
            raise InvalidInputError(f"{file}: missing field {name!r}")
        value = manifest[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InvalidInputError(
                f"{file}: field {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}"
            )
    if manifest.get("dim", 1) < 1 or manifest["count"] < 0:
        raise InvalidInputError(f"{file}: 'dim' must be >= 1 and 'count' >= 0")
    if "/" in manifest["data"] or manifest["data"] in ("", ".", ".."):
        raise InvalidInputError(f"{file}: field 'data' must name a folder inside the index")


def config_from(cls: Callable[..., T], manifest: Mapping[str, Any], path: str | os.PathLike[str]) -> T:
    """The backend config saved in ``manifest`` (its ``config`` field), or an error naming it."""
    try:
        return cls(**manifest.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{Path(path) / MANIFEST}: field 'config' is invalid: {exc}") from exc


def load_vectors(folder: Path, count: int, dim: int) -> Any:
    """``vectors.npy`` of a data folder, checked against the manifest's count and dim."""
    import numpy as np

    file = folder / "vectors.npy"
    try:
        vectors = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"index at {folder.parent} is damaged: {file.name} ({exc})") from exc
    if vectors.shape != (count, dim) or vectors.dtype != np.float32:
        raise InvalidInputError(
            f"index at {folder.parent} is damaged: {file.name} holds {vectors.dtype} {vectors.shape}, "
            f"the manifest says float32 ({count}, {dim})"
        )
    return vectors


def hnswlib_file_dim(file: Path) -> int:
    """Vector dim recorded in an hnswlib index file's header (label offset - data offset)."""
    import struct

    try:
        with open(file, "rb") as fh:
            header = fh.read(48)
    except OSError as exc:
        raise InvalidInputError(f"index at {file.parent.parent} is damaged: {file.name} ({exc})") from exc
    if len(header) < 48:
        raise InvalidInputError(f"index at {file.parent.parent} is damaged: {file.name} is truncated")
    label_offset, data_offset = struct.unpack("<2Q", header[32:48])
    return int(label_offset - data_offset) // 4


def write_json_atomic(file: Path, obj: Any) -> None:
    tmp = file.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{file.name}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, file)
    _fsync_dir(file.parent)


def write_json(file: Path, obj: Any) -> None:
    """Plain JSON write for files inside a data folder (save_index_dir fsyncs them)."""
    with open(file, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, separators=(",", ":"))


def read_json(file: Path) -> Any:
    try:
        with open(file, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"index file {file} is missing or damaged: {exc}") from exc


def _check_target(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"cannot save an index to {root}: it is a file, not a folder")
    if root.is_dir() and not (root / MANIFEST).exists():
        foreign = [
            p.name
            for p in root.iterdir()
            if not p.name.startswith((_TMP_PREFIX, _DATA_PREFIX)) and p.name != LOCK_FILE
        ]
        if foreign:
            raise InvalidInputError(
                f"refusing to save an index into {root}: the folder holds other files ({foreign[:3]})"
            )


def _remove_stale(root: Path, *, keep: str) -> None:
    for entry in root.iterdir():
        if entry.name != keep and entry.name.startswith((_DATA_PREFIX, _TMP_PREFIX)):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def copy_sparse(src: str, dst: str, *, follow_symlinks: bool = True) -> str:
    """``shutil.copy2`` that leaves holes for zero blocks (a ``copytree`` copy_function).

    Preallocated files (Qdrant's 32 MB mmaps) stay small on disk: holes in ``src`` are skipped
    via SEEK_DATA/SEEK_HOLE, and zero-filled blocks in its data become holes too.
    """
    if os.path.isdir(dst):
        dst = os.path.join(dst, os.path.basename(src))
    block = 1 << 20
    zeros = bytes(block)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
                end = os.lseek(fi.fileno(), start, os.SEEK_HOLE)
            except OSError:  # ENXIO: only a hole remains; other errors: no hole support
                if pos == 0 and not _sparse_supported(fi.fileno()):
                    start, end = 0, size
                else:
                    break
            fi.seek(start)
            while start < end:
                chunk = fi.read(min(block, end - start))
                if not chunk:
                    break
                if chunk != zeros[: len(chunk)]:
                    fo.seek(start)
                    fo.write(chunk)
                start += len(chunk)
            pos = end
        fo.truncate(size)
    shutil.copystat(src, dst, follow_symlinks=follow_symlinks)
    return dst


def _sparse_supported(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        return False
    return True


def _fsync_tree(folder: Path) -> None:
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_backend(manifest: Mapping[str, Any], backend: str, path: str | os.PathLike[str]) -> None:
    """Refuse to load an index saved by another backend through the wrong class."""
    if manifest.get("backend") != backend:
        raise InvalidInputError(
            f"index at {path} was saved by backend {manifest.get('backend')!r}, not {backend!r}; "
            "use kalm_rag.load_index(path) to load any saved index"
        )


def write_records(folder: Path, ids: list[str], payloads: list[Any]) -> None:
    """Ids and payloads, aligned by position, as two JSON files."""
    write_json(folder / "ids.json", ids)
    write_json(folder / "payloads.json", payloads)


def read_records(folder: Path, count: int) -> tuple[list[str], list[Any]]:
    ids = read_json(folder / "ids.json")
    payloads = read_json(folder / "payloads.json")
    if not (isinstance(ids, list) and isinstance(payloads, list) and len(ids) == len(payloads) == count):
        raise InvalidInputError(f"index data in {folder} is damaged: ids/payloads do not match count {count}")
    return ids, payloads
