"""Settings a multi-GPU run depends on: GradCache refused under DeepSpeed, no KV cache in
decoders, per-stage instructions and Matryoshka, dataloader workers, cross-device negatives
on by default, bounded checkpoints in every shipped recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kalm_trainer.collate import query_prefix
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.launchers import check_gradcache_launcher
from kalm_trainer.losses import LossConfig
from kalm_trainer.model import EmbeddingModel
from kalm_trainer.recipe import builtin_recipes, load_recipe
from kalm_trainer.recipe_schema import StageSection
from kalm_trainer.stages import stage_loss_config, stage_model_config, train_stage, training_arguments

from kalm_rag.config import ModelConfig
from kalm_rag.errors import ConfigError
from kalm_rag.instructions import KALM_TEMPLATE
from tests.trainer.test_trainer_support import one_thread, write_word_pairs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gradcache_stage_is_refused_under_deepspeed(
    tmp_path: Path, tiny_qwen2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what `accelerate launch --config_file launch/deepspeed_zero2.yaml` sets in every process
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    pairs = write_word_pairs(tmp_path / "pairs.jsonl", per_task=8)
    stage = StageSection(data=(str(pairs),), batch_size=8, max_steps=1, gradcache_chunk=4)
    recipe = load_recipe("kalm_v2")
    with pytest.raises(ConfigError, match="DeepSpeed"):
        train_stage(
            stage,
            model_section=recipe.model,
            init=str(tiny_qwen2_dir),
            data_files=[pairs],
            checkpoint_dir=tmp_path / "ckpt",
            seed=0,
            identity={},
        )
    assert not (tmp_path / "ckpt").exists()  # refused before anything was written
    # the shipped paper recipe's pre-training stage is exactly this combination
    with pytest.raises(ConfigError, match="torchrun"):
        check_gradcache_launcher(recipe.stages["pretrain"].gradcache_chunk)
    check_gradcache_launcher(0)  # without GradCache DeepSpeed is fine
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    check_gradcache_launcher(256)  # DDP / FSDP / one process: supported


def test_decoder_builds_no_kv_cache(tiny_qwen2_dir: Path) -> None:
    model = EmbeddingModel.from_pretrained(tiny_qwen2_dir)
    seen: list[object] = []
    model.backbone.register_forward_hook(lambda _m, _i, out: seen.append(out.past_key_values))
    ids = torch.tensor([[5, 6, 7, 8]])
    model({"x": {"input_ids": ids, "attention_mask": torch.ones_like(ids)}})
    assert seen == [None]


def test_stage_switches_instructions_and_matryoshka() -> None:
    config = ModelConfig(pooling="mean", instruction_template=KALM_TEMPLATE, query_prompt="")
    example = TrainingExample("find me", ("a doc",), instruction="Retrieve answers")
    pretrain = StageSection(instructions=False, matryoshka=False)
    finetune = StageSection()
    assert stage_model_config(config, pretrain).instruction_template is None
    assert stage_model_config(config, finetune) is config
    assert stage_loss_config(pretrain).matryoshka_dims == ()
    assert stage_loss_config(finetune).matryoshka_dims == LossConfig().matryoshka_dims

    # the collator prefixes queries with query_prefix(config, example)
    assert query_prefix(stage_model_config(config, pretrain), example) == ""
    assert (
        query_prefix(stage_model_config(config, finetune), example) == "Instruct: Retrieve answers \n Query: "
    )

    recipe = load_recipe("kalm_v2")
    assert not recipe.stages["pretrain"].instructions and not recipe.stages["pretrain"].matryoshka
    assert recipe.stages["finetune"].instructions and recipe.stages["finetune"].matryoshka
    assert all(stage.streaming for stage in recipe.stages.values())  # 470M pairs stay on disk


def test_dataloader_workers_and_gather_defaults(tmp_path: Path) -> None:
    args = training_arguments(StageSection(dataloader_workers=3), checkpoint_dir=tmp_path, seed=0, steps=1)
    assert args.dataloader_num_workers == 3
    assert (
        training_arguments(StageSection(), checkpoint_dir=tmp_path, seed=0, steps=1).dataloader_num_workers
        == 0
    )
    with pytest.raises(ConfigError, match="dataloader_workers"):
        StageSection(dataloader_workers=-1)
    # on by default: under several processes every query meets the whole global batch
    assert LossConfig().gather_across_processes


@pytest.mark.parametrize("name", builtin_recipes())
def test_shipped_recipes_bound_their_checkpoints(name: str) -> None:
    recipe = load_recipe(name)
    for stage_name, stage in recipe.stages.items():
        assert stage.save_total_limit > 0, f"{name}: stage.{stage_name} keeps every checkpoint"
