"""LlamaIndex vector store over kalm-rag indexes (exact, HNSW, Qdrant)."""

from llama_index.vector_stores.kalm.base import KaLMVectorStore
from llama_index.vector_stores.kalm.filters import to_kalm_filter

__all__ = ["KaLMVectorStore", "to_kalm_filter"]
