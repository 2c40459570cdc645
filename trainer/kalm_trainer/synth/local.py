"""A local transformers chat model (also GGUF files), generating in left-padded batches,
optionally under a JSON schema (``constrain.py``).

CPU tests use SmolLM2-135M-Instruct (``model="smollm2-135m"``). Qwen2.5-Coder-1.5B-Instruct
(``model="qwen2.5-coder-1.5b"``, GGUF parts from PyPI joined into the cache) loads here too,
dequantised: use it on a GPU (``device="cuda", batch_size=32``); on a CPU the llama.cpp
backend is several times faster. Prefer a served model (OpenAI backend, vLLM) for large runs.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError, MissingDependencyError, ModelNotFoundError
from kalm_trainer.synth.constrain import SchemaConstraint, TokenizerIndex
from kalm_trainer.synth.gguf import (
    QWEN_ALIAS,
    SMOLLM2_ALIAS,
    join_split_gguf,
    qwen_gguf_path,
    smollm2_gguf_path,
)
from kalm_trainer.synth.llm import ChatMessage, Sampling, Usage

__all__ = ["SMOLLM2_ALIAS", "TransformersChatModel", "join_split_gguf", "smollm2_gguf_path"]


def _resolve(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for transformers' from_pretrained."""
    if model in (SMOLLM2_ALIAS, QWEN_ALIAS):
        path = smollm2_gguf_path() if model == SMOLLM2_ALIAS else qwen_gguf_path()
        return str(path.parent), path.name
    path = Path(model)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {model}")
        return str(path.parent), path.name
    return model, gguf_file


def _dense_gguf_options(gguf_file: str) -> dict[str, Any]:
    """Unpack GGUF weights into plain dense layers at load time.

    Recent transformers keep GGUF blocks packed and, without a downloadable kernel (offline
    machines), unpack them again in every forward pass: several times slower generation.
    Older transformers always unpack and have no GgufConfig.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(gguf_file=gguf_file, dequantize=True)}


class TransformersChatModel:
    """Chat with a causal LM through its chat template. Prompts are sorted by length and
    generated in batches with left padding (so every prompt ends where generation starts)."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, constrain: bool = True) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError("the tokenizer has no chat template; use an instruction-tuned (chat) model")
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.constrain = constrain
        self._index: TokenizerIndex | None = None  # built on the first constrained call
        self.constraint_dead_ends = 0  # rows the JSON constraint had to stop early
        self.usage = Usage()

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(i for i in ids if isinstance(i, int))

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        constrain: bool = True,
    ) -> TransformersChatModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from kalm_rag.runtime import configure_threads, pick_device, pick_dtype

        wants_gguf = gguf_file is not None or model in (SMOLLM2_ALIAS, QWEN_ALIAS) or model.endswith(".gguf")
        if wants_gguf and importlib.util.find_spec("gguf") is None:
            raise MissingDependencyError("loading GGUF files needs the `gguf` package: `pip install gguf`")
        source, gguf = _resolve(model, gguf_file)
        torch_device = pick_device(device)
        configure_threads(None)
        kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
        if gguf:
            kwargs.update(_dense_gguf_options(gguf))
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            lm: Any = AutoModelForCausalLM.from_pretrained(
                source, dtype=pick_dtype(dtype, torch_device), **kwargs
            )
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load chat model {model!r}: {exc}") from exc
        lm.to(torch_device).eval()
        return cls(lm, tokenizer, batch_size=batch_size, constrain=constrain)

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        *,
        sampling: Sampling,
        seed: int = 0,
        schema: dict[str, Any] | None = None,
    ) -> list[str | None]:
        import torch

        if schema is not None and self.constrain and self._index is None:
            self._index = TokenizerIndex(self.tokenizer, self._eos_ids())
        index = self._index if schema is not None and self.constrain else None

        prompts = [
            self.tokenizer.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=False)
            for conv in conversations
        ]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        replies: list[str | None] = [None] * len(prompts)
        device = next(self.model.parameters()).device
        eos = set(self._eos_ids())
        for batch_number, start in enumerate(range(0, len(order), self.batch_size)):
            ids = order[start : start + self.batch_size]
            began = time.perf_counter()
            encoded = self.tokenizer(
                [prompts[i] for i in ids], padding=True, return_tensors="pt", add_special_tokens=False
            ).to(device)
            torch.manual_seed(seed * 100_003 + batch_number)  # reproducible, but each call differs
            sample = sampling.temperature > 0
            constraint = (
                None
                if index is None
                else SchemaConstraint(index, schema or {}, encoded["input_ids"].shape[1])
            )
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    prefix_allowed_tokens_fn=constraint,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=sample,
                    temperature=sampling.temperature if sample else None,
                    top_p=sampling.top_p if sample else None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for i, text in zip(
                ids, self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
            ):
                replies[i] = text
            if constraint is not None:
                self.constraint_dead_ends += constraint.dead_ends
            self.usage.requests += len(ids)
            self.usage.prompt_tokens += sum(lengths[i] for i in ids)
            for row in new_tokens.tolist():  # generated tokens up to and including the first end token
                self.usage.completion_tokens += next((n + 1 for n, t in enumerate(row) if t in eos), len(row))
            self.usage.seconds += time.perf_counter() - began
        return replies
