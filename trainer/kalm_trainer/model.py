"""The model being trained: a transformers backbone, pooling and the SDK's ModelConfig.

``EmbeddingModel`` embeds exactly as ``kalm_rag.Encoder`` does at inference (same tokenizer,
same pooling, same bidirectional switch for decoders: RECIPE.md, "Architecture"), so what the
loss optimises is what users get. ``save`` writes the SDK folder layout (merging LoRA first),
which ``kalm_rag.Encoder`` and plain sentence-transformers both load with the same vectors.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kalm_rag.config import CONFIG_FILENAME, ModelConfig
from kalm_rag.errors import ConfigError, MissingDependencyError, ModelNotFoundError
from kalm_trainer.data.config_base import StepConfig

__all__ = ["ADAPTER_FOLDER", "EmbeddingModel", "LoraSettings", "save_model_folder"]

#: Sub-folder of a checkpoint that holds the LoRA adapter (needed to resume LoRA training,
#: since the saved model itself has the adapter merged in).
ADAPTER_FOLDER = "adapter"


@dataclass(frozen=True)
class LoraSettings(StepConfig):
    """Optional LoRA (peft). KaLM v2 fine-tunes fully (``enabled = false``); LoRA is for small GPUs."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    #: module names to adapt; empty = every linear layer of the backbone ("all-linear")
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA needs r >= 1, alpha >= 1 and 0 <= dropout < 1, got {self}")


class EmbeddingModel(torch.nn.Module):
    """Backbone + pooling, trained contrastively. ``forward`` takes inputs by role.

    ``model({"query": {"input_ids": ..., "attention_mask": ...}, "passage": {...}})`` returns
    ``{"query": (b, d), "passage": (b', d)}`` pooled float32 embeddings (not normalised: the loss
    normalises after Matryoshka truncation). One call per step keeps DDP to one forward.
    """

    def __init__(self, backbone: Any, tokenizer: Any, config: ModelConfig, *, length_chunk: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.model_config = config
        #: > 0: embed in chunks of this many rows of similar length (see :meth:`embed`)
        self.length_chunk = length_chunk

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        config: ModelConfig | None = None,
        lora: LoraSettings | None = None,
        gradient_checkpointing: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        length_chunk: int = 0,
    ) -> EmbeddingModel:
        """Load any transformers backbone (folder, alias or hub id, resolved like the SDK does).

        ``config`` replaces the folder's ModelConfig (e.g. to turn a decoder bidirectional with
        ``is_causal=False`` or to add an instruction template). Weights load in float32 by
        default: mixed precision (bf16 autocast) is the trainer's job, master weights stay fp32.
        """
        from kalm_rag.loading import load_backbone, load_tokenizer
        from kalm_rag.resolve import resolve_model

        resolved = resolve_model(name_or_path)
        model_config = config or resolved.config
        tokenizer = load_tokenizer(resolved.folder)
        backbone = load_backbone(
            resolved.folder, model_config, device=torch.device(device or "cpu"), dtype=dtype
        )
        backbone.train()
        # an embedding model never generates: a decoder's KV cache would only cost memory
        if hasattr(backbone.config, "use_cache"):
            backbone.config.use_cache = False
        if gradient_checkpointing:
            # non-reentrant checkpointing works with DDP and with inputs that need no grad
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora is not None and lora.enabled:
            backbone = _add_lora(backbone, lora)
        return cls(backbone, tokenizer, model_config, length_chunk=length_chunk)

    # -- properties ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.base_model.config.hidden_size)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.backbone, "peft_config")

    @property
    def base_model(self) -> Any:
        """The transformers model underneath any LoRA wrapper."""
        return self.backbone.get_base_model() if self.is_lora else self.backbone

    @property
    def max_length(self) -> int:
        from kalm_rag.loading import effective_max_length

        return effective_max_length(self.model_config, self.base_model.config)

    # -- embedding ----------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings (float32); right-padded rows are trimmed to the longest one.

        With ``length_chunk`` > 0 the rows run in chunks of similar length, each trimmed to its
        own longest row: padding costs compute, and a batch of passages varies a lot in length
        (DESIGN.md: length sorting gave 3.8-5.5x at inference). Results are put back in order.
        """
        from kalm_rag.pooling import pool

        rows = input_ids.shape[0]
        if not bool(attention_mask[:, 0].all()):  # left padding: trimming would cut real tokens
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return pool(hidden, attention_mask, self.model_config.pooling)
        if self.length_chunk <= 0 or rows <= self.length_chunk:
            width = max(int(attention_mask.sum(dim=1).max()), 1)
            input_ids, attention_mask = input_ids[:, :width], attention_mask[:, :width]
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return pool(hidden, attention_mask, self.model_config.pooling)
        lengths = attention_mask.sum(dim=1)
        order = torch.argsort(lengths, descending=True, stable=True)
        pieces = []
        for chunk in torch.split(order, self.length_chunk):
            width = max(int(lengths[chunk].max()), 1)
            ids, mask = input_ids[chunk, :width], attention_mask[chunk, :width]
            hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
            pieces.append(pool(hidden, mask, self.model_config.pooling))
        pooled = torch.cat(pieces)
        return pooled[torch.argsort(order)]

    def forward(self, inputs: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {role: self.embed(t["input_ids"], t["attention_mask"]) for role, t in inputs.items()}

    def freeze_embeddings(self) -> int:
        """Stop training the input embeddings; returns how many parameters were frozen.

        For large-vocabulary encoders on CPU (multilingual-e5-small: 96M of its 118M parameters
        are the 250k-token embedding table) this removes most optimiser work, and a domain
        fine-tune rarely needs new token vectors.
        """
        table = self.base_model.get_input_embeddings()
        frozen = 0
        for parameter in table.parameters():
            if parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen += parameter.numel()
        return frozen

    def freeze_lower_layers(self, count: int) -> int:
        """Freeze the embeddings and the ``count`` lowest transformer layers; returns how many
        parameters were frozen. Backpropagation then stops at the first trained layer, which on
        CPU saves about a third of a step when half the layers are frozen."""
        if count <= 0:
            return 0
        layers = _transformer_layers(self.base_model)
        if count > len(layers):
            raise ConfigError(f"cannot freeze {count} layers: the model has {len(layers)}")
        frozen = self.freeze_embeddings()
        for layer in layers[:count]:
            for parameter in layer.parameters():
                if parameter.requires_grad:
                    parameter.requires_grad_(False)
                    frozen += parameter.numel()
        return frozen

    # -- saving / loading ---------------------------------------------------------------------
    def merged_backbone(self) -> Any:
        """The plain transformers model with any LoRA adapter merged in (training is untouched)."""
        if not self.is_lora:
            return self.backbone
        # merge a copy: merging in place would change the weights the optimiser is training
        return copy.deepcopy(self.backbone).merge_and_unload()

    def save(
        self, path: str | os.PathLike[str], *, state_dict: Mapping[str, torch.Tensor] | None = None
    ) -> Path:
        """Write the SDK model folder (atomically); ``state_dict`` (keys as in ``self.state_dict()``)
        is for sharded training, where the trainer gathers the full weights first."""
        target = Path(path)
        if state_dict is not None and not self.is_lora:
            weights = _strip_prefix(state_dict, "backbone.")
            save_model_folder(self.backbone, self.tokenizer, self.model_config, target, state_dict=weights)
        else:
            save_model_folder(self.merged_backbone(), self.tokenizer, self.model_config, target)
        if self.is_lora:
            self.backbone.save_pretrained(target / ADAPTER_FOLDER)
        return target

    def load_weights(self, folder: str | os.PathLike[str]) -> None:
        """Load the trainable weights saved by :meth:`save` (to resume training)."""
        folder = Path(folder)
        if self.is_lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            adapter = folder / ADAPTER_FOLDER / "adapter_model.safetensors"
            if not adapter.is_file():
                raise ModelNotFoundError(
                    f"{folder} has no LoRA adapter at {adapter}; cannot resume LoRA training"
                )
            result = set_peft_model_state_dict(self.backbone, load_file(adapter))
            unexpected = list(getattr(result, "unexpected_keys", []))
            if unexpected:
                raise ModelNotFoundError(f"{adapter} does not fit this model: {unexpected[:5]}")
            return
        from safetensors.torch import load_file

        single = folder / "model.safetensors"
        index = folder / "model.safetensors.index.json"
        if single.is_file():
            state = load_file(single)
        elif index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            state = {k: v for shard in shards for k, v in load_file(folder / shard).items()}
        else:
            raise ModelNotFoundError(f"{folder} holds no model.safetensors to resume from")
        self.backbone.load_state_dict(state, strict=True)

    def to_encoder(self, *, device: str | None = None) -> Any:
        """A ``kalm_rag.Encoder`` over a merged, eval-mode copy (for evaluation during a recipe)."""
        from kalm_rag.encoder import Encoder

        backbone = copy.deepcopy(self.merged_backbone()).eval()
        if device is not None:
            backbone.to(device)
        return Encoder(backbone, self.tokenizer, self.model_config)


def save_model_folder(
    backbone: Any,
    tokenizer: Any,
    config: ModelConfig,
    target: str | os.PathLike[str],
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """The SDK layout, as ``kalm_rag.Encoder.save_pretrained`` writes it, from a backbone.

    Kept beside the Encoder's method because training needs ``state_dict`` (FSDP/DeepSpeed gather
    the weights) and must not build an Encoder per checkpoint; both use the same st_format writer.
    """
    from kalm_rag._atomic import atomic_folder
    from kalm_rag.loading import effective_max_length
    from kalm_rag.st_format import write_sentence_transformers_files

    saved_config = config.replace(max_length=effective_max_length(config, backbone.config))
    with atomic_folder(target) as tmp:
        if state_dict is None:
            backbone.save_pretrained(tmp)
        else:
            backbone.save_pretrained(tmp, state_dict=dict(state_dict))
        tokenizer.save_pretrained(tmp)
        write_sentence_transformers_files(tmp, saved_config, int(backbone.config.hidden_size))
        (tmp / CONFIG_FILENAME).write_text(
            json.dumps(saved_config.to_dict(), indent=2) + "\n", encoding="utf-8"
        )
    return Path(target)


def _transformer_layers(model: Any) -> torch.nn.ModuleList:
    """The stack of transformer blocks, found by shape (BERT: encoder.layer, Qwen2: layers)."""
    expected = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == expected:
            return module
    raise ConfigError(f"cannot find the {expected} transformer layers of {type(model).__name__}")


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _add_lora(backbone: Any, settings: LoraSettings) -> Any:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as exc:  # pragma: no cover - peft is a dependency of kalm-trainer
        raise MissingDependencyError("LoRA needs `pip install peft`") from exc
    lora_config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules) or "all-linear",
        task_type=TaskType.FEATURE_EXTRACTION,
    )
    return get_peft_model(backbone, lora_config)
