"""``KaLMEmbeddings``: LangChain embeddings that keep the model's query instruction.

The stock HuggingFace adapters embed queries exactly like documents, so an instruction-aware
model (KaLM, e5) silently loses its query instruction or prompt. Here ``embed_query`` goes
through ``Encoder.encode_query`` (instruction or query prompt) and ``embed_documents`` through
``Encoder.encode_document`` (plain for retrieval).
"""

from __future__ import annotations

import asyncio
from typing import Any, Self

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from kalm_rag.encoder import Encoder
from kalm_rag.errors import ConfigError
from langchain_kalm._encoders import find_loaded, load_encoder, remember

# Encoder.encode keywords that have their own field (or that would bypass the instruction logic)
_RESERVED_ENCODE_KWARGS = frozenset({"texts", "prompt", "batch_size", "normalize", "truncate_dim"})
_ALLOWED_ENCODE_KWARGS = frozenset({"show_progress"})


class KaLMEmbeddings(BaseModel, Embeddings):
    """Instruction-aware embeddings from kalm-rag models.

    Example:
        .. code-block:: python

            from langchain_kalm import KaLMEmbeddings

            embeddings = KaLMEmbeddings(model="kalm-v2", task="retrieval")
            vector = embeddings.embed_query("how do I mount a USB drive?")  # with the instruction
            vectors = embeddings.embed_documents(["udisksctl mounts removable drives"])  # plain

    Pass ``encoder=`` to reuse an already loaded ``kalm_rag.Encoder``; otherwise ``model``
    (an alias, a folder or a hub id; ``None`` is the packaged all-MiniLM-L6-v2) is loaded once
    per process and shared by every ``KaLMEmbeddings`` with the same loading options.
    """

    model_name: str | None = Field(default=None, alias="model")
    """Model alias, folder or hub id; ``None`` is the packaged default model."""
    encoder: Encoder | None = Field(default=None, exclude=True)
    """An already loaded encoder to use instead of loading ``model``."""
    device: str | None = None
    """Torch device (``"cpu"``, ``"cuda"``); ``None`` picks a GPU when there is one."""
    dtype: str | None = None
    """``"float32"``, ``"bfloat16"``...; ``None`` picks bf16 where it is fast."""
    batch_size: int = Field(default=32, gt=0)
    """Texts per forward pass."""
    instruction: str | None = None
    """Query instruction; ``None`` uses the model's default instruction for ``task``."""
    task: str | None = None
    """Task type (``retrieval``, ``sts``, ``classification``...) that picks the default instruction.
    Symmetric tasks put the instruction on documents too, as the model was trained."""
    normalize: bool | None = None
    """L2-normalise embeddings; ``None`` follows the model's config."""
    truncate_dim: int | None = Field(default=None, gt=0)
    """Keep the first ``truncate_dim`` dimensions (Matryoshka models), then re-normalise."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for ``Encoder.from_pretrained`` (``config=``, ``max_length=``...)."""
    encode_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for ``Encoder.encode`` (``show_progress``)."""

    model_config = ConfigDict(
        arbitrary_types_allowed=True, populate_by_name=True, extra="forbid", protected_namespaces=()
    )

    _encoder: Encoder = PrivateAttr()

    @model_validator(mode="after")
    def _load_encoder(self) -> Self:
        unknown = set(self.encode_kwargs) - _ALLOWED_ENCODE_KWARGS
        if unknown:
            hint = " (they have their own fields)" if unknown & _RESERVED_ENCODE_KWARGS else ""
            raise ConfigError(
                f"encode_kwargs {sorted(unknown)} are not supported{hint}; "
                f"allowed: {sorted(_ALLOWED_ENCODE_KWARGS)}"
            )
        if self.encoder is not None:
            loading = {"device": self.device, "dtype": self.dtype, "model_kwargs": self.model_kwargs}
            given = [name for name, value in loading.items() if value]
            if given:
                raise ConfigError(f"{given} only apply when loading a model; drop them when passing encoder=")
            if self.model_name not in (None, self.encoder.name_or_path):
                raise ConfigError(
                    f"model={self.model_name!r} does not name the given encoder "
                    f"({self.encoder.name_or_path!r}); pass one of them"
                )
            self._encoder = self.encoder
            remember(self.encoder)
            self.model_name = self.encoder.name_or_path
        else:
            self._encoder = load_encoder(
                self.model_name, device=self.device, dtype=self.dtype, model_kwargs=self.model_kwargs
            )
        # Fail now, not on the first query, when the instruction or task cannot apply to this model.
        self._encoder.config.query_prefix(instruction=self.instruction, task=self.task)
        if self.truncate_dim is not None and self.truncate_dim > self._encoder.dim:
            raise ConfigError(
                f"truncate_dim={self.truncate_dim} exceeds the model's {self._encoder.dim} dims"
            )
        return self

    @property
    def client(self) -> Encoder:
        """The underlying ``kalm_rag.Encoder``."""
        return self._encoder

    @property
    def dim(self) -> int:
        """Length of the vectors this object returns."""
        return self.truncate_dim or self._encoder.dim

    def _encode_options(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "normalize": self.normalize,
            "truncate_dim": self.truncate_dim,
            **self.encode_kwargs,
        }

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (no instruction, except for symmetric tasks)."""
        if not texts:
            return []
        vectors = self._encoder.encode_document(texts, task=self.task, **self._encode_options())
        result: list[list[float]] = vectors.tolist()
        return result

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the model's instruction (or query prompt)."""
        vectors = self._encoder.encode_query(
            [text], instruction=self.instruction, task=self.task, **self._encode_options()
        )
        result: list[float] = vectors[0].tolist()
        return result

    # The encoder is synchronous and CPU/GPU bound: run it in a worker thread so the event loop
    # keeps serving other tasks while a batch is encoded.
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)

    def spec(self) -> dict[str, Any]:
        """JSON-safe settings that rebuild an equivalent object (used by vector-store saves)."""
        return {
            "model": self._encoder.name_or_path,
            "model_config": self._encoder.config.to_dict(),
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "instruction": self.instruction,
            "task": self.task,
            "normalize": self.normalize,
            "truncate_dim": self.truncate_dim,
            "encode_kwargs": dict(self.encode_kwargs),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> KaLMEmbeddings:
        """Rebuild from :meth:`spec` (the model is loaded, or taken from the cache)."""
        from kalm_rag.config import ModelConfig

        values = dict(spec)
        saved_config = values.pop("model_config", None)
        if not saved_config:
            return cls(**values)
        config = ModelConfig.from_dict(saved_config)
        loaded = find_loaded(values["model"], config, device=values.get("device"), dtype=values.get("dtype"))
        if loaded is not None:
            values.update(model=None, device=None, dtype=None)
            return cls(**values, encoder=loaded)
        return cls(**values, model_kwargs={"config": config})
