"""Pure helpers that shape embedding responses: Matryoshka truncation, float/base64 encodings."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import numpy.typing as npt


def truncate_rows(
    vectors: npt.NDArray[np.float32], dim: int | None, *, normalize: bool
) -> npt.NDArray[np.float32]:
    """Keep the first ``dim`` columns, then re-normalise if the model normalises.

    Equal to encoding with ``truncate_dim=dim``: scaling a row before truncation does not change
    the direction of the truncated row, so the batch can be encoded once at full size.
    """
    if dim is None or dim >= vectors.shape[1]:
        return vectors
    out = np.ascontiguousarray(vectors[:, :dim], dtype=np.float32)
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def encode_vector(vector: npt.NDArray[np.float32], encoding_format: str) -> list[float] | str:
    """``float``: a JSON list; ``base64``: little-endian float32 bytes, as the OpenAI API sends."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    values: list[float] = vector.astype(np.float64).tolist()
    return values


def embeddings_response(
    vectors: npt.NDArray[np.float32], *, encoding_format: str, model: str, prompt_tokens: int
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(row, encoding_format)}
            for i, row in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
