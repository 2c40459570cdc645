"""The step registry: every pipeline step by name, runnable from a recipe or from Python.

    from kalm_trainer.data.steps import run_step
    manifest = run_step("mine_negatives", {"n": 7, "window": [50, 100]}, [examples], out_dir)
    manifest.output_path()  # out_dir / "examples.jsonl"

A step is ``body(config, inputs, output_dir) -> stats``; :func:`run_step` parses the config,
skips the step when ``output_dir`` holds a matching manifest, and writes the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kalm_rag.errors import ConfigError
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.convert import ConvertPairsConfig, run_convert_step
from kalm_trainer.data.filtering import FilterConfig, run_filter_step
from kalm_trainer.data.labelling import LabelConfig, run_label_step
from kalm_trainer.data.manifest import Manifest, StepBody, run_with_manifest
from kalm_trainer.data.mining import MineConfig, run_mine_step
from kalm_trainer.synth.steps import PersonasConfig, SynthConfig, run_personas_step, run_synth_step

__all__ = ["STEPS", "Step", "parse_step_config", "run_step"]


@dataclass(frozen=True)
class Step:
    name: str
    config_type: type[StepConfig]
    body: StepBody
    summary: str


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step(
            "convert_pairs",
            ConvertPairsConfig,
            run_convert_step,
            "pair JSONL (query/positive/...) -> examples",
        ),
        Step("synthesize", SynthConfig, run_synth_step, "persona-based synthetic examples from an LLM"),
        Step(
            "personas_from_corpus",
            PersonasConfig,
            run_personas_step,
            "text-to-persona: personas from a corpus",
        ),
        Step(
            "filter_ranking",
            FilterConfig,
            run_filter_step,
            "ranking-consistency filtering (best positive in top-k)",
        ),
        Step("mine_negatives", MineConfig, run_mine_step, "hard negatives from a rank window of a retrieval"),
        Step("label_examples", LabelConfig, run_label_step, "example-based labelling of classification data"),
    )
}


def _step(name: str) -> Step:
    if name not in STEPS:
        raise ConfigError(f"unknown data step {name!r}; known steps: {sorted(STEPS)}")
    return STEPS[name]


def parse_step_config(name: str, config: Mapping[str, Any] | StepConfig | None = None) -> StepConfig:
    """The step's config object from a mapping (unknown keys raise ConfigError) or as given."""
    step = _step(name)
    if isinstance(config, StepConfig):
        if not isinstance(config, step.config_type):
            raise ConfigError(
                f"step {name!r} takes a {step.config_type.__name__}, got {type(config).__name__}"
            )
        return config
    return step.config_type.from_mapping(config or {}, where=f"config of step {name!r}")


def run_step(
    name: str,
    config: Mapping[str, Any] | StepConfig | None,
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    force: bool = False,
) -> Manifest:
    """Run step ``name`` into ``output_dir`` (skipped when a matching manifest is there)."""
    step = _step(name)
    parsed = parse_step_config(name, config)
    return run_with_manifest(name, step.body, parsed, parsed.to_dict(), inputs, output_dir, force=force)
