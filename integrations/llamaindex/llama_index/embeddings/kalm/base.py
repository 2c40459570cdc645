"""``KaLMEmbedding``: a LlamaIndex embedding model that keeps the model's query instruction.

LlamaIndex's HuggingFace adapter overwrites a model's saved query prompt; here queries go
through ``Encoder.encode_query`` (instruction or query prompt) and texts through
``Encoder.encode_document`` (plain for retrieval, instruction on both sides for symmetric tasks).
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.embeddings.kalm._encoders import load_encoder

from kalm_rag.encoder import Encoder
from kalm_rag.errors import ConfigError
from kalm_rag.registry import DEFAULT_MODEL


class KaLMEmbedding(BaseEmbedding):
    """Instruction-aware embeddings from kalm-rag models.

    Example:
        .. code-block:: python

            from llama_index.core import Settings
            from llama_index.embeddings.kalm import KaLMEmbedding

            Settings.embed_model = KaLMEmbedding(model_name="kalm-v2", task="retrieval")

    Pass ``encoder=`` to reuse a loaded ``kalm_rag.Encoder``; otherwise ``model_name`` (an
    alias, a folder or a hub id) is loaded once per process and shared.
    """

    model_name: str = Field(default=DEFAULT_MODEL, description="Model alias, folder or hub id.")
    embed_batch_size: int = Field(default=32, gt=0, le=2048, description="Texts per forward pass.")
    device: str | None = Field(default=None, description="Torch device; None picks a GPU if present.")
    dtype: str | None = Field(default=None, description="float32 / bfloat16; None picks the fast one.")
    instruction: str | None = Field(
        default=None, description="Query instruction; None uses the model's default for `task`."
    )
    task: str | None = Field(
        default=None, description="Task type (retrieval, sts, classification...) picking the instruction."
    )
    normalize: bool | None = Field(default=None, description="L2-normalise; None follows the model.")
    truncate_dim: int | None = Field(default=None, gt=0, description="Matryoshka truncation dims.")
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra Encoder.from_pretrained keyword arguments."
    )

    _encoder: Encoder = PrivateAttr()

    def __init__(self, *, encoder: Encoder | None = None, **data: Any) -> None:
        if encoder is not None:
            loading = [name for name in ("device", "dtype", "model_kwargs") if data.get(name)]
            if loading:
                raise ConfigError(
                    f"{loading} only apply when loading a model; drop them when passing encoder="
                )
            if data.get("model_name") not in (None, encoder.name_or_path):
                raise ConfigError(
                    f"model_name={data['model_name']!r} does not name the given encoder "
                    f"({encoder.name_or_path!r}); pass one of them"
                )
            data["model_name"] = encoder.name_or_path
        super().__init__(**data)
        self._encoder = encoder or load_encoder(
            self.model_name, device=self.device, dtype=self.dtype, model_kwargs=self.model_kwargs
        )
        # Fail now, not on the first query, when the instruction or task cannot apply to this model.
        self._encoder.config.query_prefix(instruction=self.instruction, task=self.task)
        if self.truncate_dim is not None and self.truncate_dim > self._encoder.dim:
            raise ConfigError(
                f"truncate_dim={self.truncate_dim} exceeds the model's {self._encoder.dim} dims"
            )

    @classmethod
    def class_name(cls) -> str:
        return "KaLMEmbedding"

    @property
    def encoder(self) -> Encoder:
        """The underlying ``kalm_rag.Encoder``."""
        return self._encoder

    def _options(self) -> dict[str, Any]:
        return {
            "batch_size": self.embed_batch_size,
            "normalize": self.normalize,
            "truncate_dim": self.truncate_dim,
        }

    def _get_query_embedding(self, query: str) -> Embedding:
        vectors = self._encoder.encode_query(
            [query], instruction=self.instruction, task=self.task, **self._options()
        )
        result: Embedding = vectors[0].tolist()
        return result

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        vectors = self._encoder.encode_document(texts, task=self.task, **self._options())
        result: list[Embedding] = vectors.tolist()
        return result

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    # The encoder is synchronous and compute bound: run it in a worker thread so the event loop
    # keeps serving other tasks meanwhile.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
