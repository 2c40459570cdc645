"""LangChain integration for kalm-rag."""

__all__: list[str] = []
