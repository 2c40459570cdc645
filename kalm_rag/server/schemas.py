"""Request bodies. Unknown fields are rejected so a typo (``"dimension"``) is an error, not a no-op."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: the OpenAI fields plus ``input_type`` / ``instruction`` / ``task``.

    Queries (``input_type="query"``) get the model's instruction or query prompt; documents
    (the default, as an OpenAI client sends nothing) stay plain.
    """

    model_config = ConfigDict(extra="forbid")

    input: str | list[Any]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    input_type: Literal["query", "document"] = "document"
    instruction: str | None = None
    task: str | None = None


class SearchRequest(BaseModel):
    """``POST /v1/search`` over the loaded retriever (the shared filter language for ``filter``)."""

    model_config = ConfigDict(extra="forbid")

    query: str
    k: int = Field(default=5)
    filter: dict[str, Any] | None = None
    hybrid: bool = False
    instruction: str | None = None
    model: str | None = None
