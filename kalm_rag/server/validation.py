"""Checks of request input against the server limits, and the model call the batcher runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kalm_rag.errors import KalmRagError
from kalm_rag.server.batcher import EncodeFn, FloatArray
from kalm_rag.server.config import ServerConfig
from kalm_rag.server.errors import bad_request
from kalm_rag.server.schemas import EmbeddingRequest

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder


def check_inputs(raw: str | list[Any], cfg: ServerConfig) -> list[str]:
    """The request's texts, or a 400 naming the first problem (empty, too long, not text...)."""
    texts = [raw] if isinstance(raw, str) else raw
    if not texts:
        raise bad_request("input must not be empty", param="input")
    if len(texts) > cfg.max_inputs:
        raise bad_request(
            f"input has {len(texts)} items; at most {cfg.max_inputs} per request", param="input"
        )
    total = 0
    for i, text in enumerate(texts):
        if isinstance(text, int | list):
            raise bad_request("token-id input is not supported by this server; send text", param="input")
        if not isinstance(text, str):
            raise bad_request(f"input[{i}] must be a string, got {type(text).__name__}", param="input")
        if not text.strip():
            raise bad_request(f"input[{i}] is empty or whitespace only", param="input")
        if not text.isascii() and not _encodable(text):
            raise bad_request(
                f"input[{i}] is not valid Unicode (it holds a lone surrogate such as \\ud800)", param="input"
            )
        if len(text) > cfg.max_input_chars:
            raise bad_request(
                f"input[{i}] has {len(text)} characters; at most {cfg.max_input_chars}", param="input"
            )
        total += len(text)
    if total > cfg.max_total_chars:
        raise bad_request(
            f"input has {total} characters in all; at most {cfg.max_total_chars}", param="input"
        )
    return list(texts)


def prefix_for(encoder: Encoder, body: EmbeddingRequest) -> str:
    """The literal prefix the Encoder would put before each text (instruction or prompt)."""
    if body.instruction is not None and not body.instruction.strip():
        raise bad_request("instruction must be a non-empty string", param="instruction")
    if body.instruction is not None and not _encodable(body.instruction):
        raise bad_request("instruction is not valid Unicode (a lone surrogate)", param="instruction")
    try:
        if body.input_type == "query":
            return encoder.config.query_prefix(instruction=body.instruction, task=body.task)
        if body.instruction is not None:
            raise bad_request(
                "instruction applies to queries only; set input_type='query'", param="instruction"
            )
        return encoder.config.document_prefix(task=body.task)
    except KalmRagError as exc:
        raise bad_request(str(exc), param="task" if body.task else "instruction") from None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_fn(encoder: Encoder, batch_size: int) -> EncodeFn:
    """The batcher's model call: full-size embeddings (truncated per request later) and the
    number of tokens each text used, for the ``usage`` field."""

    def encode(texts: list[str]) -> tuple[FloatArray, list[int]]:
        vectors = encoder.encode(texts, batch_size=batch_size)
        ids = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
        return np.asarray(vectors, dtype=np.float32), [len(row) for row in ids]

    return encode
