"""Load a transformers backbone and tokenizer the way a ModelConfig asks for."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kalm_rag.config import ModelConfig
from kalm_rag.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    import torch


def load_backbone(folder: Path, config: ModelConfig, *, device: torch.device, dtype: torch.dtype) -> Any:
    """The bare transformer (no LM head) in eval mode, bidirectional if the config says so."""
    from transformers import AutoConfig, AutoModel

    try:
        hf_config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read the transformers config in {folder}: {exc}") from exc
    if config.is_causal is not None:
        # transformers 5 reads config.is_causal when building the mask; setting it on the config
        # (not per layer) is what actually removes the causal mask, and it persists in config.json
        hf_config.is_causal = config.is_causal
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*were not used when initializing.*")
        try:
            model = AutoModel.from_pretrained(folder, config=hf_config, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot load model weights from {folder}: {exc}") from exc
    model.to(device)
    model.eval()
    return model


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        # decoder tokenizers (Qwen2) often lack a pad token; padding is masked out anyway
        if tokenizer.eos_token is None:
            raise ConfigError(f"tokenizer in {folder} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def effective_max_length(config: ModelConfig, hf_config: Any) -> int:
    """The config's max length, clipped to the position table of absolute-position models."""
    limit = getattr(hf_config, "max_position_embeddings", None)
    if getattr(hf_config, "model_type", "") in ("xlm-roberta", "roberta", "camembert") and limit:
        limit -= 2  # RoBERTa-style models offset positions by padding_idx + 1
    if isinstance(limit, int) and limit > 0:
        return min(config.max_length, limit)
    return config.max_length
