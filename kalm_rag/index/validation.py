"""Input checks shared by every index backend, so bad input fails the same way everywhere.

Each check either returns the input in the canonical form the engines want (a list of str,
a C-contiguous float32 matrix, a list of payload dicts) or raises ``InvalidInputError`` with a
message that names the problem.
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import METRICS, Payload

RESERVED_PREFIX = "__kalm"
_SHOW = 5  # how many offending items an error message lists
_TINY = float(np.finfo(np.float32).tiny)


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim <= 0:
        raise ConfigError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def check_k(k: int) -> int:
    if type(k) is int and k > 0:  # the usual case, on every search
        return k
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_ids(ids: Sequence[str], *, unique: bool = True) -> list[str]:
    """Non-empty strings; with ``unique`` (``add``) an id may appear only once per call."""
    if isinstance(ids, str | bytes):
        raise InvalidInputError("ids must be a sequence of strings, not a single string: wrap it in a list")
    try:
        out = list(ids)
    except TypeError as exc:
        raise InvalidInputError(f"ids must be a sequence of strings, got {type(ids).__name__}") from exc
    bad = [i for i, x in enumerate(out) if not isinstance(x, str) or not x or not _is_unicode(x)]
    if bad:
        shown = ", ".join(f"#{i}={out[i]!r}" for i in bad[:_SHOW])
        raise InvalidInputError(f"ids must be non-empty strings (valid Unicode); bad ids at {shown}")
    if unique and len(set(out)) != len(out):
        dupes = [x for x, n in Counter(out).items() if n > 1]
        raise InvalidInputError(
            f"duplicate ids in one call: {dupes[:_SHOW]!r}; each id may appear once per add() call"
        )
    return out


def check_vectors(vectors: npt.ArrayLike, *, dim: int, what: str = "vectors") -> npt.NDArray[np.float32]:
    """A 2-D finite float32 matrix with ``dim`` columns (a 1-D vector becomes one row)."""
    if isinstance(vectors, np.ndarray) and vectors.dtype == np.float32:
        arr = vectors  # the common case: skip conversion (this runs on every single-query search)
    else:
        try:
            with np.errstate(over="ignore"):  # overflow to inf is reported below, with the row
                arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{what} must be a numeric 2-D array of shape (n, {dim}): {exc}") from exc
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dim)  # an empty list is zero rows
    if arr.ndim != 2:
        raise InvalidInputError(f"{what} must be 2-D (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise InvalidInputError(f"{what} dimension mismatch: the index has dim {dim}, got {arr.shape[1]}")
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))[:_SHOW].tolist()
        raise InvalidInputError(f"{what} contain NaN or inf (after float32 conversion) at rows {rows}")
    return np.ascontiguousarray(arr)


def check_payloads(payloads: Sequence[Mapping[str, Any] | None] | None, count: int) -> list[Payload | None]:
    """One JSON-object payload (or None) per id; empty payloads become None."""
    if payloads is None:
        return [None] * count
    if isinstance(payloads, Mapping | str | bytes):
        raise InvalidInputError("payloads must be a sequence with one dict (or None) per id")
    items = list(payloads)
    if len(items) != count:
        raise InvalidInputError(f"got {count} ids but {len(items)} payloads")
    out: list[Payload | None] = []
    for i, payload in enumerate(items):
        if payload is None:
            out.append(None)
            continue
        if not isinstance(payload, Mapping):
            raise InvalidInputError(f"payload #{i} must be a dict or None, got {type(payload).__name__}")
        for key in payload:
            if not isinstance(key, str) or not key:
                raise InvalidInputError(f"payload #{i} has a key that is not a non-empty string: {key!r}")
            if key.startswith(RESERVED_PREFIX):
                raise InvalidInputError(
                    f"payload #{i} uses the reserved key {key!r} (prefix {RESERVED_PREFIX!r})"
                )
        try:
            # A JSON round trip both validates (no NaN, no custom objects, no lone surrogates,
            # integers within 64 bits) and detaches the copy we store from the caller's dict.
            text = json.dumps(dict(payload), allow_nan=False, ensure_ascii=False)
            text.encode("utf-8")  # a lone surrogate ("\ud800") cannot be saved as UTF-8
            copy = json.loads(text, parse_int=_int64)
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"payload #{i} holds a string that is not valid Unicode (a lone surrogate at "
                f"character {exc.start}); decode your data correctly or drop that character"
            ) from exc
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInputError(f"payload #{i} is not JSON-serialisable: {exc}") from exc
        out.append(copy or None)
    return out


_INT64 = (-(2**63), 2**63 - 1)


def _int64(literal: str) -> int:
    value = int(literal)
    if not _INT64[0] <= value <= _INT64[1]:
        # Qdrant stores integers as 64-bit and would hand this back as a float
        raise ValueError(f"integer {literal} does not fit in 64 bits (signed); store it as a string")
    return value


def _is_unicode(text: str) -> bool:
    """False for strings with lone surrogates, which cannot be encoded, saved or sent."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalize_rows(vectors: npt.NDArray[np.float32], *, what: str = "vectors") -> npt.NDArray[np.float32]:
    """Unit-length rows (a new array) for cosine; a zero vector has no direction, so it is rejected."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    if not (norms > _TINY).all():
        rows = np.flatnonzero(norms <= _TINY)[:_SHOW].tolist()
        raise InvalidInputError(f"{what} at rows {rows} are zero vectors, which have no cosine similarity")
    normalised: npt.NDArray[np.float32] = vectors / norms[:, None]
    return normalised


def prepare(
    vectors: npt.ArrayLike, *, dim: int, metric: str, what: str = "vectors"
) -> npt.NDArray[np.float32]:
    """Validate, then normalise under cosine: the exact form every engine stores or queries."""
    if isinstance(vectors, np.ndarray) and vectors.shape == (dim,) and vectors.dtype == np.float32:
        # One query vector, the hot path of single-query search: one dot product both proves
        # every element finite (inf/NaN propagate) and gives the norm. Anything unusual (a
        # non-finite sum, a zero vector) falls through to the general checks and their errors.
        squared = float(np.vdot(vectors, vectors))  # vdot: an overflow gives inf without a warning
        if math.isfinite(squared) and squared > _TINY:
            row: npt.NDArray[np.float32] = vectors.reshape(1, dim)
            if metric != "cosine" or abs(squared - 1.0) < 2e-6:
                return row
            return (row / math.sqrt(squared)).astype(np.float32, copy=False)
    arr = check_vectors(vectors, dim=dim, what=what)
    return normalize_rows(arr, what=what) if metric == "cosine" and len(arr) else arr


def detached(payload: Payload | None) -> Payload | None:
    """A deep copy of a stored payload, so callers cannot change what the index holds."""
    return None if payload is None else copy.deepcopy(payload)
