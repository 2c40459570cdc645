"""How a model turns texts into embeddings: pooling, prompts, instructions, attention, MRL dims."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError
from kalm_rag.instructions import DEFAULT_INSTRUCTIONS, TaskType, parse_task, render_prefix
from kalm_rag.pooling import POOLING_MODES

CONFIG_FILENAME = "kalm_rag.json"


@dataclass(frozen=True)
class ModelConfig:
    """Everything the Encoder needs besides the weights and tokenizer.

    ``instruction_template`` set means the model is instruction-aware (KaLM style): queries get
    ``template.format(instruction)`` and documents stay plain, except for symmetric tasks where
    both sides carry the instruction. Without a template, ``query_prompt`` / ``document_prompt``
    are fixed prefixes (e5 style ``"query: "`` / ``"passage: "``).
    ``is_causal=False`` turns a decoder's causal mask off (KaLM v2); ``None`` keeps the model's own.
    """

    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 512
    is_causal: bool | None = None
    query_prompt: str = ""
    document_prompt: str = ""
    instruction_template: str | None = None
    default_instructions: Mapping[str, str] = field(default_factory=dict)
    matryoshka_dims: tuple[int, ...] = ()
    similarity: str = "cosine"

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise ConfigError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {self.pooling!r}")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2, got {self.max_length!r}")
        if self.similarity not in ("cosine", "dot"):
            raise ConfigError(f"similarity must be 'cosine' or 'dot', got {self.similarity!r}")
        if self.instruction_template is not None:
            render_prefix(self.instruction_template, "x")  # validates the placeholder
        for task in self.default_instructions:
            parse_task(task)
        dims = tuple(self.matryoshka_dims)
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise ConfigError(f"matryoshka_dims must be positive integers, got {dims!r}")
        object.__setattr__(self, "matryoshka_dims", tuple(sorted(dims, reverse=True)))
        object.__setattr__(self, "default_instructions", dict(self.default_instructions))

    # -- instructions -------------------------------------------------------------------------
    def instruction_for(self, task: str | TaskType | None) -> str:
        parsed = parse_task(task or TaskType.RETRIEVAL)
        return self.default_instructions.get(parsed.value, DEFAULT_INSTRUCTIONS[parsed])

    def query_prefix(self, *, instruction: str | None = None, task: str | TaskType | None = None) -> str:
        """The text put before every query."""
        if task is not None:
            parse_task(task)  # an unknown task is an error even for models without instructions
        if self.instruction_template is None:
            if instruction is not None:
                raise ConfigError(
                    "this model has no instruction template, so an instruction would change its "
                    "inputs in a way it was not trained for; pass prompt=... to encode() instead, "
                    "or set ModelConfig.instruction_template"
                )
            return self.query_prompt
        return render_prefix(self.instruction_template, instruction or self.instruction_for(task))

    def document_prefix(self, *, task: str | TaskType | None = None, instruction: str | None = None) -> str:
        """The text put before every document (the candidate side).

        Asymmetric tasks (retrieval, reranking; also ``task=None``): the document prompt (plain
        for KaLM-style models, ``"passage: "`` for e5). Symmetric tasks (STS, pair
        classification, bitext, classification, clustering, summarization) give both sides the
        query's prefix: the instruction for instruction-aware models, the query prompt for
        prompt models (e5's model card: ``"query: "`` for symmetric tasks).
        """
        if task is None or parse_task(task) in (TaskType.RETRIEVAL, TaskType.RERANKING):
            return self.document_prompt
        return self.query_prefix(instruction=instruction, task=task)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["matryoshka_dims"] = list(self.matryoshka_dims)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        values = dict(data)
        if "matryoshka_dims" in values:
            values["matryoshka_dims"] = tuple(values["matryoshka_dims"])
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def read(cls, folder: Path) -> ModelConfig | None:
        path = folder / CONFIG_FILENAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        return cls.from_dict(data)
