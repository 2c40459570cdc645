"""Persona-based synthetic training data from an LLM (llama.cpp or transformers on a GGUF file,
or any OpenAI-compatible endpoint). Names load lazily."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "ChatModel": "kalm_trainer.synth.llm",
    "LLMConfig": "kalm_trainer.synth.llm",
    "Sampling": "kalm_trainer.synth.llm",
    "load_chat_model": "kalm_trainer.synth.llm",
    "TransformersChatModel": "kalm_trainer.synth.local",
    "LlamaCppChatModel": "kalm_trainer.synth.llamacpp",
    "smollm2_gguf_path": "kalm_trainer.synth.gguf",
    "qwen_gguf_path": "kalm_trainer.synth.gguf",
    "cached_joined_gguf": "kalm_trainer.synth.gguf",
    "join_split_gguf": "kalm_trainer.synth.gguf",
    "OpenAIChatModel": "kalm_trainer.synth.remote",
    "SYNTH_TASKS": "kalm_trainer.synth.tasks",
    "SynthConfig": "kalm_trainer.synth.generate",
    "SynthResult": "kalm_trainer.synth.generate",
    "generate_synthetic": "kalm_trainer.synth.generate",
    "load_personas": "kalm_trainer.synth.personas",
    "corpus_texts": "kalm_trainer.synth.personas",
    "personas_from_texts": "kalm_trainer.synth.personas",
    "PersonasConfig": "kalm_trainer.synth.steps",
}

__all__ = [
    "SYNTH_TASKS",
    "ChatModel",
    "LLMConfig",
    "LlamaCppChatModel",
    "OpenAIChatModel",
    "PersonasConfig",
    "Sampling",
    "SynthConfig",
    "SynthResult",
    "TransformersChatModel",
    "cached_joined_gguf",
    "corpus_texts",
    "generate_synthetic",
    "join_split_gguf",
    "load_chat_model",
    "load_personas",
    "personas_from_texts",
    "qwen_gguf_path",
    "smollm2_gguf_path",
]

if TYPE_CHECKING:
    from kalm_trainer.synth.generate import SynthConfig, SynthResult, generate_synthetic
    from kalm_trainer.synth.gguf import cached_joined_gguf, join_split_gguf, qwen_gguf_path, smollm2_gguf_path
    from kalm_trainer.synth.llamacpp import LlamaCppChatModel
    from kalm_trainer.synth.llm import ChatModel, LLMConfig, Sampling, load_chat_model
    from kalm_trainer.synth.local import TransformersChatModel
    from kalm_trainer.synth.personas import corpus_texts, load_personas, personas_from_texts
    from kalm_trainer.synth.remote import OpenAIChatModel
    from kalm_trainer.synth.steps import PersonasConfig
    from kalm_trainer.synth.tasks import SYNTH_TASKS


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kalm_trainer.synth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
