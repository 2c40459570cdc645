"""Split long documents into overlapping chunks measured in the encoder's own tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kalm_rag.errors import ConfigError


@dataclass(frozen=True)
class ChunkerConfig:
    """``chunk_tokens`` tokens per chunk, consecutive chunks sharing ``overlap`` tokens."""

    chunk_tokens: int = 256
    overlap: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 8:
            raise ConfigError(f"chunk_tokens must be an integer >= 8, got {self.chunk_tokens!r}")
        if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.chunk_tokens:
            raise ConfigError(f"overlap must be in [0, chunk_tokens), got {self.overlap!r}")


def token_windows(n_tokens: int, config: ChunkerConfig) -> list[tuple[int, int]]:
    """Token index ranges [start, end) covering ``n_tokens`` with the configured overlap."""
    if n_tokens <= config.chunk_tokens:
        return [(0, n_tokens)]
    step = config.chunk_tokens - config.overlap
    windows = []
    start = 0
    while True:
        end = min(start + config.chunk_tokens, n_tokens)
        windows.append((start, end))
        if end == n_tokens:
            return windows
        start += step


def chunk_text(text: str, tokenizer: Any, config: ChunkerConfig) -> list[str]:
    """Chunks of ``text`` cut at token boundaries (character offsets from a fast tokenizer)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets: list[tuple[int, int]] = encoding["offset_mapping"]
    if len(offsets) <= config.chunk_tokens:
        return [text]
    chunks = []
    for start, end in token_windows(len(offsets), config):
        piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
        if piece:
            chunks.append(piece)
    return chunks
