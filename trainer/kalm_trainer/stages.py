"""Run one training stage: examples in, a trained EmbeddingModel out, resumable at any checkpoint.

The stage trains with :class:`KalmTrainer` into ``checkpoint_dir``. When that folder already
holds complete checkpoints of the same stage (same ``identity``), training resumes from the
latest one, so a killed run continues where it stopped; checkpoints of a different
configuration are moved aside, never mixed in (``restart=True`` deletes them instead).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kalm_rag.errors import ConfigError
from kalm_trainer.checkpoints import STAMP_NAME, latest_checkpoint
from kalm_trainer.collate import EmbeddingCollator, ExampleDataset
from kalm_trainer.data.jsonl import read_examples
from kalm_trainer.data.sampler import batch_text_keys, plan_global_batches
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.data.store import IndexedExamples
from kalm_trainer.launchers import check_gradcache_launcher
from kalm_trainer.losses import LossConfig
from kalm_trainer.model import EmbeddingModel
from kalm_trainer.processes import process_state
from kalm_trainer.recipe_schema import ModelSection, StageSection

if TYPE_CHECKING:
    from kalm_rag.config import ModelConfig

__all__ = ["StageResult", "stage_loss_config", "stage_model_config", "train_stage", "training_arguments"]

logger = logging.getLogger("kalm_trainer")


@dataclass
class StageResult:
    model: EmbeddingModel
    #: the trained model in SDK format (written by the main process; gathered under FSDP/ZeRO-3)
    folder: Path
    stats: dict[str, Any]


def uses_bf16(precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and torch.cuda.is_available())


def planned_steps(examples: Sequence[TrainingExample], stage: StageSection, seed: int) -> tuple[int, int]:
    """(optimiser steps of the stage, batches per epoch), as the trainer's sampler will plan them."""
    plan = plan_global_batches(
        [ex.task for ex in examples],
        batch_size=stage.batch_size,
        ratio=stage.task_ratio,
        seed=seed,
        epoch=0,
        text_keys=[batch_text_keys(ex) for ex in examples],
        min_batch=int(os.environ.get("WORLD_SIZE", "1")),  # as the sampler plans it per process
    )
    per_epoch = len(plan.batches)
    if per_epoch == 0:
        raise ConfigError(
            f"{len(examples)} examples form no full batch of {stage.batch_size}; lower batch_size or add data"
        )
    steps = stage.max_steps if stage.max_steps > 0 else math.ceil(stage.epochs * per_epoch)
    return steps, per_epoch


def training_arguments(stage: StageSection, *, checkpoint_dir: Path, seed: int, steps: int) -> Any:
    from transformers import TrainingArguments

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if stage.batch_size % world:
        raise ConfigError(f"batch_size {stage.batch_size} is not divisible by the {world} training processes")
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        max_steps=steps,
        per_device_train_batch_size=stage.batch_size // world,  # informational: the batch sampler rules
        learning_rate=stage.learning_rate,
        weight_decay=stage.weight_decay,
        warmup_steps=math.ceil(stage.warmup_ratio * steps),
        lr_scheduler_type=stage.lr_scheduler,
        max_grad_norm=stage.max_grad_norm,
        logging_steps=stage.logging_steps,
        save_strategy="steps" if stage.save_steps else "no",
        save_steps=stage.save_steps or 500,
        save_total_limit=stage.save_total_limit or None,
        seed=seed,
        bf16=uses_bf16(stage.precision),
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=stage.dataloader_workers,
        remove_unused_columns=False,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
    )


def stage_model_config(config: ModelConfig, stage: StageSection) -> ModelConfig:
    """How this stage prompts texts: ``instructions = false`` drops the instruction template
    (queries get the plain query prompt); the saved model keeps the full config."""
    return config if stage.instructions else config.replace(instruction_template=None)


def stage_loss_config(stage: StageSection) -> LossConfig:
    """The stage's loss; ``matryoshka = false`` trains the full dimension only."""
    if stage.matryoshka:
        return stage.loss
    return dataclasses.replace(stage.loss, matryoshka_dims=(), matryoshka_weights=())


def load_stage_examples(files: Sequence[Path], stage: StageSection) -> list[TrainingExample]:
    examples = read_examples(list(files)).examples
    if stage.teacher:
        from kalm_trainer.data.embedding import load_encoder
        from kalm_trainer.teacher import add_teacher_scores

        logger.info("scoring %d examples with teacher %s", len(examples), stage.teacher)
        examples = add_teacher_scores(examples, load_encoder(stage.teacher))
    return examples


def stage_data(
    stage: StageSection, files: Sequence[Path], *, checkpoint_dir: Path, seed: int
) -> tuple[ExampleDataset | IndexedExamples, int, int]:
    """The stage's dataset, optimiser steps and batches per epoch. ``streaming`` stages read an
    on-disk index (built by the main process beside ``checkpoint_dir``; the others wait for it
    by polling, not in a collective that would time out); the others load the examples."""
    if not stage.streaming:
        examples = load_stage_examples(files, stage)
        steps, per_epoch = planned_steps(examples, stage, seed)
        return ExampleDataset(examples), steps, per_epoch
    if stage.teacher:
        raise ConfigError(
            "a streaming stage gets teacher scores from the recipe pipeline (`kalm-train run`), "
            "which scores the data once, sharded across processes, and caches the result"
        )
    from kalm_trainer.data.store import open_index
    from kalm_trainer.data.store_sampler import IndexedBatchSampler
    from kalm_trainer.waiting import failure_marker

    folder = checkpoint_dir.with_name(checkpoint_dir.name + ".index")
    failed = failure_marker(folder)
    main = process_state().is_main_process
    try:
        index = open_index(files, folder, build=main, failed=failed)
    except Exception as exc:
        if main:
            failed.write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        raise
    if main:
        failed.unlink(missing_ok=True)
    sampler = IndexedBatchSampler(index, batch_size=stage.batch_size, ratio=stage.task_ratio, seed=seed)
    per_epoch = len(sampler)
    if per_epoch == 0:
        raise ConfigError(
            f"{index.count} examples form no full batch of {stage.batch_size}; lower batch_size or add data"
        )
    logger.info("streaming %d examples from %d file(s); index in %s", index.count, len(files), folder)
    return IndexedExamples(index), sampler.steps(stage.epochs, stage.max_steps), per_epoch


def _prepare_checkpoints(checkpoint_dir: Path, identity: Mapping[str, Any], restart: bool) -> None:
    """Keep checkpoints of this very stage (to resume from); move those of another
    configuration aside (never resume from them, never silently delete days of training)."""
    stamp = checkpoint_dir / STAMP_NAME
    wanted = json.loads(json.dumps(identity))
    if checkpoint_dir.exists() and restart:
        shutil.rmtree(checkpoint_dir)
    elif checkpoint_dir.exists() and (
        not stamp.is_file() or json.loads(stamp.read_text(encoding="utf-8")) != wanted
    ):
        aside = _free_name(checkpoint_dir)
        logger.warning("checkpoints in %s are from another configuration; moved to %s", checkpoint_dir, aside)
        checkpoint_dir.rename(aside)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(wanted, indent=2, sort_keys=True), encoding="utf-8")


def _free_name(folder: Path) -> Path:
    number = 1
    while (candidate := folder.with_name(f"{folder.name}.stale-{number}")).exists():
        number += 1
    return candidate


def train_stage(
    stage: StageSection,
    *,
    model_section: ModelSection,
    init: str,
    data_files: Sequence[Path],
    checkpoint_dir: Path,
    seed: int,
    identity: Mapping[str, Any],
    restart: bool = False,
) -> StageResult:
    """Train ``stage`` from the model ``init`` on ``data_files``; returns the trained model."""
    from transformers import set_seed

    from kalm_rag.resolve import resolve_model
    from kalm_trainer.trainer import KalmTrainer

    check_gradcache_launcher(stage.gradcache_chunk, where="stage")
    state = process_state()
    dataset, steps, per_epoch = stage_data(stage, data_files, checkpoint_dir=checkpoint_dir, seed=seed)
    with state.main_process_first():
        if state.is_main_process:
            _prepare_checkpoints(checkpoint_dir, identity, restart)
    found = latest_checkpoint(checkpoint_dir)
    resume = str(found) if found is not None else None
    set_seed(seed)  # LoRA initialisation and dropout draw from the global RNG
    model_config = model_section.apply(resolve_model(init).config)
    model = EmbeddingModel.from_pretrained(
        init,
        config=model_config,
        lora=model_section.lora,
        gradient_checkpointing=stage.gradient_checkpointing,
    )
    model.length_chunk = stage.length_chunk
    frozen = model.freeze_embeddings() if stage.freeze_embeddings else 0
    frozen += model.freeze_lower_layers(stage.frozen_layers)
    collator = EmbeddingCollator(
        model.tokenizer,
        stage_model_config(model.model_config, stage),
        num_negatives=stage.negatives,
        query_max_length=min(stage.query_max_length or model.max_length, model.max_length),
        passage_max_length=min(stage.passage_max_length or model.max_length, model.max_length),
        seed=seed,
    )
    trainer = KalmTrainer(
        model=model,
        args=training_arguments(stage, checkpoint_dir=checkpoint_dir, seed=seed, steps=steps),
        data_collator=collator,
        train_dataset=dataset,
        loss_config=stage_loss_config(stage),
        batch_size=stage.batch_size,
        task_ratio=stage.task_ratio,
        gradcache_chunk=stage.gradcache_chunk,
    )
    if resume:
        logger.info("resuming from %s", resume)
    output = trainer.train(resume_from_checkpoint=resume)
    final = checkpoint_dir / "final"
    trainer.save_model(str(final))  # every process calls it: sharded engines gather the weights
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    stats = {
        "examples": len(dataset),
        "streaming": stage.streaming,
        "batches_per_epoch": per_epoch,
        "batch_plan": trainer.batch_plan_stats(),
        "steps": trainer.state.global_step,
        "resumed_from": resume,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "frozen_parameters": frozen,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "train_runtime_s": runtime,
        "bf16": bool(trainer.args.bf16),
        "device": str(trainer.args.device),
        "world_size": trainer.args.world_size,
    }
    return StageResult(model, final, stats)
