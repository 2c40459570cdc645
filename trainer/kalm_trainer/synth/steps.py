"""Pipeline-step shells of the synthetic-data stage (registered in ``kalm_trainer.data.steps``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.files import atomic_text_file
from kalm_trainer.data.jsonl import write_examples, write_jsonl
from kalm_trainer.synth.generate import SynthConfig, generate_synthetic
from kalm_trainer.synth.llm import LLMConfig, Sampling, load_chat_model
from kalm_trainer.synth.personas import corpus_texts, load_personas, personas_from_texts

__all__ = ["PersonasConfig", "SynthConfig", "run_personas_step", "run_synth_step"]


@dataclass(frozen=True)
class PersonasConfig(StepConfig):
    llm: LLMConfig = field(default_factory=LLMConfig)
    max_texts: int = 1000  # corpus texts sampled (one persona asked per text)
    max_chars: int = 1500  # each text is cut to this many characters in the prompt
    max_retries: int = 2
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 96
    prompts_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_texts < 1 or self.max_chars < 1 or self.max_retries < 0:
            raise ConfigError("max_texts and max_chars must be >= 1, max_retries >= 0")
        Sampling(self.max_new_tokens, self.temperature, self.top_p)


def run_synth_step(config: SynthConfig, inputs: Sequence[Path], output_dir: Path) -> dict[str, Any]:
    """Inputs: persona files. Writes ``examples.jsonl`` and ``instructions.jsonl``."""
    if not inputs:
        raise ConfigError("step 'synthesize' needs a personas file as input (.txt or .jsonl)")
    personas = load_personas(inputs)
    llm = config.llm.resolved()  # "auto" becomes the backend and model used, for the manifest
    result = generate_synthetic(load_chat_model(llm), personas, config)
    write_examples(output_dir / "examples.jsonl", result.examples)
    write_jsonl(
        output_dir / "instructions.jsonl", ({"task": t, "instruction": i} for t, i in result.instructions)
    )
    return {"llm_backend": llm.backend, "llm_model": llm.model, **result.stats}


def run_personas_step(config: PersonasConfig, inputs: Sequence[Path], output_dir: Path) -> dict[str, Any]:
    """Inputs: corpus files. Writes ``personas.txt`` (one persona a line)."""
    if not inputs:
        raise ConfigError("step 'personas_from_corpus' needs corpus files as input")
    texts = corpus_texts(inputs, max_texts=config.max_texts, seed=config.seed)
    llm = config.llm.resolved()
    personas, stats = personas_from_texts(
        load_chat_model(llm),
        texts,
        sampling=Sampling(config.max_new_tokens, config.temperature, config.top_p),
        max_retries=config.max_retries,
        seed=config.seed,
        max_chars=config.max_chars,
        prompts_dir=config.prompts_dir,
    )
    with atomic_text_file(output_dir / "personas.txt") as handle:
        for persona in personas:
            handle.write(persona.replace("\n", " ") + "\n")
    return {"llm_backend": llm.backend, "llm_model": llm.model, "texts": len(texts), **stats}
