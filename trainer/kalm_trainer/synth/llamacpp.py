"""llama.cpp through ``llama-cpp-python``: the fast way to run a GGUF chat model on a CPU.

Optional: ``pip install 'kalm-trainer[llm]'`` builds llama.cpp from source (see README for the
portable build flags and how long it takes). Replies are constrained to the stage's JSON
schema with a llama.cpp grammar made from it. Requests run one after another: the
high-level API has no batching, and on a few CPU cores one sequence already keeps every core
busy; the shared prompt prefix stays in the KV cache between requests.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kalm_rag.errors import KalmRagError, MissingDependencyError, ModelNotFoundError
from kalm_trainer.synth.gguf import QWEN_ALIAS, SMOLLM2_ALIAS, qwen_gguf_path, smollm2_gguf_path
from kalm_trainer.synth.llm import ChatMessage, Sampling, Usage

__all__ = ["LlamaCppChatModel", "resolve_gguf"]

_INSTALL = (
    "the llama.cpp backend needs llama-cpp-python, built from source: "
    "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' "
    "pip install 'kalm-trainer[llm]'  (or use backend='transformers')"
)


def resolve_gguf(model: str) -> Path:
    """A ``.gguf`` path for a file name or one of the aliases of PyPI-shipped models."""
    if model == QWEN_ALIAS:
        return qwen_gguf_path()
    if model == SMOLLM2_ALIAS:
        return smollm2_gguf_path()
    path = Path(model)
    if path.suffix != ".gguf" or not path.is_file():
        raise ModelNotFoundError(
            f"llama.cpp needs a .gguf file or an alias ({QWEN_ALIAS!r}, {SMOLLM2_ALIAS!r}); got {model!r}"
        )
    return path


#: llama-cpp-python's schema converter lets a JSON string hold raw control characters (its
#: ``char`` rule is ``[^"\\]``), so a model could write a real newline inside a string and the
#: reply was not JSON: every SmolLM2 brainstorm reply failed that way ("no JSON list"). JSON
#: forbids U+0000-U+001F unescaped; llama.cpp's own C++ converter excludes them, as this does.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def strict_string_chars(gbnf: str) -> str:
    """The grammar with JSON's rule for characters in strings (no raw control characters)."""
    lines = [_STRICT_CHAR + line[len(_LOOSE_CHAR) :] if line.startswith(_LOOSE_CHAR) else line
             for line in gbnf.splitlines()]  # fmt: skip
    return "\n".join(lines) + "\n"


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class LlamaCppChatModel:
    """Chat with a GGUF model through llama.cpp, under a JSON-schema grammar when asked."""

    def __init__(self, llama: Any, *, constrain: bool = True) -> None:
        self.llama = llama
        self.constrain = constrain
        self.usage = Usage()
        self._grammars: dict[str, Any] = {}

    @classmethod
    def from_model(
        cls,
        model: str,
        *,
        n_threads: int | None = None,
        n_ctx: int = 4096,
        constrain: bool = True,
        seed: int = 0,
    ) -> LlamaCppChatModel:
        try:
            from llama_cpp import Llama  # type: ignore[import-not-found,import-untyped,unused-ignore]
        except ImportError as exc:
            raise MissingDependencyError(_INSTALL) from exc
        path = resolve_gguf(model)
        threads = n_threads or _default_threads()
        llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            seed=seed,
            verbose=False,
        )
        return cls(llama, constrain=constrain)

    def _grammar(self, schema: dict[str, Any] | None) -> Any:
        if schema is None or not self.constrain:
            return None
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp.llama_grammar import (  # type: ignore[import-not-found,import-untyped,unused-ignore]
                LlamaGrammar,
                json_schema_to_gbnf,
            )

            # keys in the schema's order (query, positive, hard_negative): a sorted schema made
            # the model write the hard negative first, and then copy it as the positive
            gbnf = json_schema_to_gbnf(json.dumps(schema), prop_order=list(schema.get("required", [])))
            self._grammars[key] = LlamaGrammar.from_string(strict_string_chars(gbnf), verbose=False)
        return self._grammars[key]

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        *,
        sampling: Sampling,
        seed: int = 0,
        schema: dict[str, Any] | None = None,
    ) -> list[str | None]:
        grammar = self._grammar(schema)
        replies: list[str | None] = []
        errors: list[BaseException] = []
        for index, messages in enumerate(conversations):
            start = time.perf_counter()
            try:
                out = self.llama.create_chat_completion(
                    messages=[dict(m) for m in messages],
                    max_tokens=sampling.max_new_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    seed=seed * 100_003 + index,
                    grammar=grammar,
                )
            except Exception as exc:  # prompt longer than n_ctx, decode failures
                errors.append(exc)
                self.usage.failed += 1
                replies.append(None)
                continue
            finally:
                self.usage.seconds += time.perf_counter() - start
            self.usage.requests += 1
            usage = out.get("usage") or {}
            self.usage.prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.usage.completion_tokens += int(usage.get("completion_tokens", 0))
            replies.append(out["choices"][0]["message"].get("content") or "")
        if errors and len(errors) == len(conversations):
            raise KalmRagError(f"llama.cpp failed on every request; first error: {errors[0]}") from errors[0]
        return replies
