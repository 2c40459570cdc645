"""Read and write the sentence-transformers folder layout (modules.json, pooling, prompts).

Reading lets the Encoder load any sentence-transformers folder with its own pooling and prompts;
writing makes folders we save loadable by plain ``SentenceTransformer(path)`` with the same vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kalm_rag.config import ModelConfig
from kalm_rag.errors import ConfigError
from kalm_rag.instructions import TaskType

_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
}
_ST_POOLING_NAMES = {"mean": "mean", "cls": "cls", "lasttoken": "last", "last": "last"}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc


def _pooling_from_st(folder: Path, modules: list[dict[str, Any]]) -> tuple[str | None, bool]:
    pooling: str | None = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            cfg_path = folder / str(module.get("path", "")) / "config.json"
            if cfg_path.is_file():
                cfg = _read_json(cfg_path)
                mode = cfg.get("pooling_mode")
                if isinstance(mode, str):
                    pooling = _ST_POOLING_NAMES.get(mode)
                    if pooling is None:
                        raise ConfigError(f"{cfg_path}: pooling mode {mode!r} is not supported")
                else:
                    enabled = [name for key, name in _POOLING_KEYS.items() if cfg.get(key)]
                    others = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
                    if len(others) > len(enabled) or len(enabled) > 1:
                        raise ConfigError(f"{cfg_path}: only one of mean/cls/lasttoken pooling is supported")
                    pooling = enabled[0] if enabled else None
        elif kind.endswith("Normalize"):
            normalize = True
    return pooling, normalize


def config_from_sentence_transformers(folder: Path) -> ModelConfig | None:
    """Build a ModelConfig from a sentence-transformers folder, or None when it is not one."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    if not isinstance(modules, list):
        raise ConfigError(f"{modules_path} must hold a JSON list of modules")
    pooling, normalize = _pooling_from_st(folder, modules)
    values: dict[str, Any] = {"pooling": pooling or "mean", "normalize": normalize}
    bert_cfg = folder / "sentence_bert_config.json"
    if bert_cfg.is_file():
        max_len = _read_json(bert_cfg).get("max_seq_length")
        if isinstance(max_len, int):
            values["max_length"] = max_len
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.is_file():
        data = _read_json(st_cfg)
        prompts = data.get("prompts") or {}
        values["query_prompt"] = str(prompts.get("query", ""))
        values["document_prompt"] = str(prompts.get("document", prompts.get("passage", "")))
        if data.get("similarity_fn_name") == "dot":
            values["similarity"] = "dot"
    return ModelConfig(**values)


def write_sentence_transformers_files(folder: Path, config: ModelConfig, dim: int) -> None:
    """Write modules.json, pooling, prompts and max length next to the HF weights."""
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if config.normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling_cfg = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": config.pooling == "cls",
        "pooling_mode_mean_tokens": config.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": config.pooling == "last",
        "include_prompt": True,
    }
    prompts: dict[str, str] = {"query": config.query_prefix(), "document": config.document_prompt}
    if config.instruction_template is not None:
        # one named prompt per task type, so sentence-transformers users get KaLM instructions
        for task in TaskType:
            prompts[task.value] = config.query_prefix(task=task)
    st_cfg = {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": config.similarity}
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": pooling_cfg,
        "sentence_bert_config.json": {"max_seq_length": config.max_length, "do_lower_case": False},
        "config_sentence_transformers.json": st_cfg,
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
