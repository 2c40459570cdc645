"""Server limits and micro-batching settings."""

from __future__ import annotations

from dataclasses import dataclass, fields

from kalm_rag.errors import ConfigError


@dataclass(frozen=True)
class ServerConfig:
    """Request limits protect the process; batching settings trade latency for throughput.

    ``max_batch_texts``: texts gathered from concurrent requests into one model call.
    ``max_wait_ms``: how long the first request of a batch waits for company (a lone request
    pays at most this). ``max_queue``: requests waiting for the model before new ones get 503.
    ``encode_batch_size``: texts per forward pass inside one model call (sorted by length).
    """

    max_inputs: int = 2048  # per request, as in the OpenAI API
    max_input_chars: int = 32_768  # per input text
    max_total_chars: int = 1_000_000  # per request
    max_body_bytes: int = 16 * 1024 * 1024
    max_k: int = 100  # /v1/search
    max_batch_texts: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    encode_batch_size: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"ServerConfig.{f.name} must be a non-negative number, got {value!r}")
            if f.name != "max_wait_ms" and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"ServerConfig.{f.name} must be a positive integer, got {value!r}")
