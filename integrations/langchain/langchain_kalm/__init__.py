"""LangChain integration for kalm-rag: instruction-aware embeddings and a vector store.

``from langchain_kalm import KaLMEmbeddings, KaLMVectorStore``
"""

from langchain_kalm.embeddings import KaLMEmbeddings
from langchain_kalm.vectorstores import KaLMVectorStore

__all__ = ["KaLMEmbeddings", "KaLMVectorStore"]
