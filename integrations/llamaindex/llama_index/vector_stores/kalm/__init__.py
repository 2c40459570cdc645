"""LlamaIndex vector store over kalm-rag indexes."""

__all__: list[str] = []
