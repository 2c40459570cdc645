"""LlamaIndex embedding for kalm-rag."""

__all__: list[str] = []
