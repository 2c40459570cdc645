"""LlamaIndex embedding for kalm-rag: ``from llama_index.embeddings.kalm import KaLMEmbedding``."""

from llama_index.embeddings.kalm.base import KaLMEmbedding

__all__ = ["KaLMEmbedding"]
