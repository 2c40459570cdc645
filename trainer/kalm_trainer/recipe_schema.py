"""The sections of a recipe as frozen dataclasses (see ``recipe.py`` for the TOML layout).

Every field has a documented default; unknown keys are errors (``StepConfig.from_mapping``).
Values the KaLM papers publish are the defaults of ``kalm_v2.toml``, not of these classes,
which default to what a small single-machine run needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kalm_rag.config import ModelConfig
from kalm_rag.errors import ConfigError
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.losses import LossConfig
from kalm_trainer.model import LoraSettings

__all__ = ["DataStep", "ModelSection", "RunSection", "SoupSection", "StageSection"]

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class RunSection(StepConfig):
    name: str = "run"
    #: where every step writes; "" = runs/<name> (relative paths: from the working directory)
    output_dir: str = ""
    seed: int = 0


@dataclass(frozen=True)
class ModelSection(StepConfig):
    """The starting model and how it embeds; ``None`` keeps the base model's own setting."""

    base: str = "all-MiniLM-L6-v2"
    pooling: str | None = None
    normalize: bool | None = None
    #: false turns a decoder bidirectional (KaLM v2: ``config.is_causal = False``)
    is_causal: bool | None = None
    max_length: int | None = None
    instruction_template: str | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    matryoshka_dims: tuple[int, ...] | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)

    def apply(self, base: ModelConfig) -> ModelConfig:
        """The base model's config with this section's explicit settings on top."""
        names = (
            "pooling",
            "normalize",
            "is_causal",
            "max_length",
            "instruction_template",
            "query_prompt",
            "document_prompt",
            "matryoshka_dims",
        )
        changes = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        return base.replace(**changes) if changes else base


@dataclass(frozen=True)
class DataStep:
    """One ``[data.<name>]`` table: a registered pipeline step, its inputs and its config."""

    name: str
    step: str
    inputs: tuple[str, ...]  # paths or "@<data step>" (that step's examples.jsonl)
    config: Any  # the step's own StepConfig


@dataclass(frozen=True)
class StageSection(StepConfig):
    """One training stage (``[stage.<name>]``): pre-training, fine-tuning or distillation."""

    #: training files: paths or "@<data step>"
    data: tuple[str, ...] = ()
    #: starting weights: "" = the previous stage's model (the base model for the first stage),
    #: "@base", "@<stage>", or a model name/path
    init: str = ""
    #: hard negatives per query (group = 1 positive + n); 0 = in-batch negatives only
    negatives: int = 0
    #: GLOBAL batch size (all processes together)
    batch_size: int = 32
    epochs: float = 1.0
    #: > 0: train exactly this many optimiser steps (overrides epochs)
    max_steps: int = 0
    learning_rate: float = 1e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_scheduler: str = "linear"
    #: semi-homogeneous task batching: 1 = every batch from one task, 0 = random batches
    task_ratio: float = 1.0
    #: 0 = the model's max_length
    query_max_length: int = 0
    passage_max_length: int = 0
    #: "auto" = bf16 autocast on a GPU, fp32 on CPU (bf16 autocast training is slow on CPUs)
    precision: str = "auto"
    gradient_checkpointing: bool = False
    #: > 0: GradCache with chunks of this many texts (large batches in small memory)
    gradcache_chunk: int = 0
    #: > 0: embed texts in chunks of this many rows of similar length (less padding; good on CPU)
    length_chunk: int = 0
    #: freeze the input embedding table (saves most optimiser work for 250k-vocab encoders)
    freeze_embeddings: bool = False
    #: freeze the embeddings and this many of the lowest transformer layers (cheaper steps)
    frozen_layers: int = 0
    #: checkpoint every N steps (resume points; "@stage:checkpoints" soups them); 0 = never
    save_steps: int = 500
    #: keep at most this many checkpoints; 0 = keep all
    save_total_limit: int = 0
    logging_steps: int = 10
    #: distillation: a teacher model (name/path) scores each query's group; its scores become
    #: soft labels (``teacher_scores``) for the KL term of the loss. "" = no distillation
    teacher: str = ""
    #: false: no instructions in this stage (queries get the model's plain query prompt, e.g.
    #: pre-training on weak pairs); the saved model keeps [model]'s instruction template
    instructions: bool = True
    #: false: train the full dimension only in this stage (loss.matryoshka_dims is ignored)
    matryoshka: bool = True
    #: DataLoader worker processes that read and tokenise batches (0 = in the training process)
    dataloader_workers: int = 0
    #: true: examples stay on disk (an index of line offsets, task ids and text hashes, built
    #: once per file) and are read lazily by each process; for data that does not fit in memory
    streaming: bool = False
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.negatives >= 0, "negatives must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs > 0 or self.max_steps > 0, "epochs must be > 0 (or max_steps > 0)"),
            (self.max_steps >= 0, "max_steps must be >= 0"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be within [0, 1)"),
            (0.0 <= self.task_ratio <= 1.0, "task_ratio must be within [0, 1]"),
            (self.query_max_length >= 0 and self.passage_max_length >= 0, "max lengths must be >= 0"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (
                min(self.gradcache_chunk, self.length_chunk, self.frozen_layers) >= 0,
                "gradcache_chunk, length_chunk and frozen_layers must be >= 0",
            ),
            (self.save_steps >= 0 and self.save_total_limit >= 0, "save_steps/save_total_limit must be >= 0"),
            (self.logging_steps >= 1, "logging_steps must be >= 1"),
            (self.dataloader_workers >= 0, "dataloader_workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class SoupSection(StepConfig):
    """Model soup (stage 3): average the weights of several models into the final model."""

    #: "@<stage>" (its final model), "@<stage>:checkpoints" (every checkpoint it saved),
    #: "@base", or model folders
    models: tuple[str, ...] = ()
    #: one positive weight per model (after expanding ":checkpoints" and ``last_n``; models the
    #: dev check rejects drop out with their weights); empty = uniform
    weights: tuple[float, ...] = ()
    #: keep only the last N checkpoints (by step) of each "@<stage>:checkpoints" entry; 0 = all.
    #: Early checkpoints are barely trained: averaging them in pulls the soup back
    last_n: int = 0
    #: dev check: "@<data step>" or JSONL files of pairs / examples. Every ingredient is scored
    #: (MRR@10 of the positives among each task's candidates) and only those within
    #: ``dev_tolerance`` of the best score are averaged; scores go to the manifest. [] = none
    dev_data: tuple[str, ...] = ()
    dev_tolerance: float = 0.01
    #: dev examples scored per ingredient (a seeded sample; 0 = all)
    dev_max_examples: int = 500

    def __post_init__(self) -> None:
        if self.last_n < 0:
            raise ConfigError(f"soup.last_n must be >= 0 (0 = every checkpoint), got {self.last_n}")
        if self.dev_tolerance < 0 or self.dev_max_examples < 0:
            raise ConfigError("soup.dev_tolerance and soup.dev_max_examples must be >= 0")
