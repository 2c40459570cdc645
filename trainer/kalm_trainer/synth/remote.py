"""Any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, hosted APIs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kalm_rag.errors import KalmRagError, MissingDependencyError
from kalm_trainer.synth.llm import ChatMessage, Sampling

__all__ = ["OpenAIChatModel"]
log = logging.getLogger("kalm_trainer")


class OpenAIChatModel:
    """Send conversations concurrently to ``/v1/chat/completions`` with the ``openai`` client.

    A failed request (after the client's own retries) yields None for that conversation, so
    one bad request does not end a long run; if every request of a call fails, the endpoint
    is unusable and the first error is raised.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        json_mode: bool = False,
        constrain: bool = True,
    ) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a trainer dependency
            raise MissingDependencyError("the OpenAI backend needs `pip install openai`") from exc
        # local servers ignore the key, but the client refuses to start without one
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=max_retries
        )
        self.model = model
        self.max_concurrency = max_concurrency
        self.json_mode = json_mode
        self.constrain = constrain
        # "json_schema" (OpenAI's form) until a server rejects it, then "json_object" + schema
        self.schema_style = "json_schema"

    def _response_format(self, schema: dict[str, Any] | None) -> dict[str, Any]:
        """``json_schema`` (vLLM, llama.cpp's llama-server, SGLang, OpenAI) when constraining; a
        server that rejects that type (llama-cpp-python's server) gets ``json_object`` with the
        schema from then on; else ``json_object`` with ``json_mode``. A server that knows neither
        answers 400, counted as failed requests (turn ``constrain`` off for it)."""
        if schema is not None and self.constrain:
            if self.schema_style == "json_object":
                return {"response_format": {"type": "json_object", "schema": schema}}
            body = {"name": "reply", "schema": schema}
            return {"response_format": {"type": "json_schema", "json_schema": body}}
        return {"response_format": {"type": "json_object"}} if self.json_mode else {}

    def _one(
        self, messages: Sequence[ChatMessage], sampling: Sampling, seed: int, schema: dict[str, Any] | None
    ) -> str:
        extra = self._response_format(schema)
        try:
            return self._create(messages, sampling, seed, extra)
        except Exception as exc:
            asked = extra.get("response_format", {}).get("type")
            if asked != "json_schema" or "json_schema" not in str(exc):  # not a rejected format
                raise
        if self.schema_style != "json_object":
            self.schema_style = "json_object"
            log.warning("the chat server rejects response_format json_schema; sending json_object + schema")
        return self._create(messages, sampling, seed, self._response_format(schema))

    def _create(
        self, messages: Sequence[ChatMessage], sampling: Sampling, seed: int, extra: dict[str, Any]
    ) -> str:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[dict(m) for m in messages],  # type: ignore[misc]
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=seed,
            **extra,
        )
        content = response.choices[0].message.content if response.choices else None
        return content or ""

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        *,
        sampling: Sampling,
        seed: int = 0,
        schema: dict[str, Any] | None = None,
    ) -> list[str | None]:
        if not conversations:
            return []
        errors: list[BaseException] = []

        def call(item: tuple[int, Sequence[ChatMessage]]) -> str | None:
            index, messages = item
            try:
                return self._one(messages, sampling, seed * 100_003 + index, schema)
            except Exception as exc:  # openai.APIError and transport errors
                errors.append(exc)
                return None

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            replies = list(pool.map(call, enumerate(conversations)))
        if errors and len(errors) == len(conversations):
            raise KalmRagError(
                f"every request to the chat endpoint failed; first error: {errors[0]}"
            ) from errors[0]
        return replies
