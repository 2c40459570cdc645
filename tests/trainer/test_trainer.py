"""KalmTrainer on a tiny Qwen2: learning happens, GradCache matches plain steps, task batches,
SDK-format checkpoints, and teacher scores for distillation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kalm_trainer.collate import EmbeddingCollator, ExampleDataset
from kalm_trainer.data.convert import load_pairs
from kalm_trainer.losses import LossConfig
from kalm_trainer.model import EmbeddingModel
from kalm_trainer.recipe_schema import StageSection
from kalm_trainer.stages import training_arguments
from kalm_trainer.teacher import add_teacher_scores
from kalm_trainer.trainer import KalmTrainer

from kalm_rag import Encoder
from kalm_rag.config import ModelConfig
from kalm_rag.instructions import KALM_TEMPLATE
from tests.trainer.test_trainer_support import one_thread, write_word_pairs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

KALM = ModelConfig(is_causal=False, instruction_template=KALM_TEMPLATE, max_length=32)
LOSS = LossConfig(temperature=0.05, gamma=0.5, mix_k=2, mix_pool=3, matryoshka_dims=(1024, 16),
                  matryoshka_weights=(1.0, 0.3))  # fmt: skip


def make_trainer(folder: Path, data: Path, out: Path, **stage_changes: Any) -> KalmTrainer:
    base = StageSection(
        data=("x",),
        negatives=2,
        batch_size=6,
        max_steps=2,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        save_steps=0,
        logging_steps=1,
        loss=LOSS,
    )
    stage = replace(base, **stage_changes)
    torch.manual_seed(0)
    model = EmbeddingModel.from_pretrained(folder, config=KALM)
    examples = load_pairs(data).examples
    return KalmTrainer(
        model=model,
        args=training_arguments(stage, checkpoint_dir=out, seed=0, steps=stage.max_steps),
        data_collator=EmbeddingCollator(model.tokenizer, model.model_config, num_negatives=stage.negatives),
        train_dataset=ExampleDataset(examples),
        loss_config=stage.loss,
        batch_size=stage.batch_size,
        task_ratio=stage.task_ratio,
        gradcache_chunk=stage.gradcache_chunk,
    )


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return write_word_pairs(tmp_path / "pairs.jsonl", per_task=12, negatives=3)


def test_training_lowers_the_loss_on_its_batches(tiny_qwen2_dir: Path, pairs: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_qwen2_dir, pairs, tmp_path / "ckpt", max_steps=12)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 12 and all(np.isfinite(losses))
    per_epoch = len(trainer.batch_sampler())
    # every epoch sees the same examples (in new batches): the last epoch must beat the first
    assert np.mean(losses[-per_epoch:]) < np.mean(losses[:per_epoch])
    assert trainer.state.num_input_tokens_seen > 0


def test_each_epoch_draws_new_batches(tiny_qwen2_dir: Path, pairs: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_qwen2_dir, pairs, tmp_path / "epochs", max_steps=8)
    seen: list[frozenset[str]] = []
    collate = trainer.data_collator

    def recording(examples: list[Any]) -> Any:
        seen.append(frozenset(ex.query for ex in examples))
        return collate(examples)

    trainer.data_collator = recording
    trainer.train()
    assert len(seen) == 8  # 4 batches per epoch, 2 epochs
    assert set(seen[:4]) != set(seen[4:])
    assert set().union(*seen[:4]) == set().union(*seen[4:])  # same examples, new batches


def test_gradcache_steps_equal_plain_steps(tiny_qwen2_dir: Path, pairs: Path, tmp_path: Path) -> None:
    plain = make_trainer(tiny_qwen2_dir, pairs, tmp_path / "a")
    plain.train()
    cached = make_trainer(tiny_qwen2_dir, pairs, tmp_path / "b", gradcache_chunk=4)
    cached.train()
    for (name, a), (_, b) in zip(
        plain.model.named_parameters(), cached.model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)
    loss = lambda t: [e["loss"] for e in t.state.log_history if "loss" in e]  # noqa: E731
    np.testing.assert_allclose(loss(plain), loss(cached), rtol=1e-5)


def test_batches_are_task_homogeneous_at_ratio_one(tiny_qwen2_dir: Path, pairs: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_qwen2_dir, pairs, tmp_path / "c")
    examples = trainer.train_dataset.examples
    batches = list(trainer.get_train_dataloader().batch_sampler)
    assert len(batches) == 4  # 2 tasks x 12 examples / batch 6
    assert all(len({examples[i].task for i in batch}) == 1 for batch in batches)
    mixed = make_trainer(tiny_qwen2_dir, pairs, tmp_path / "d", task_ratio=0.0)
    assert any(len({examples[i].task for i in b}) == 2 for b in mixed.get_train_dataloader().batch_sampler)


def test_checkpoints_are_sdk_model_folders(tiny_qwen2_dir: Path, pairs: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_qwen2_dir, pairs, tmp_path / "e", save_steps=1)
    trainer.train()
    checkpoint = tmp_path / "e" / "checkpoint-2"
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "optimizer.pt").is_file()
    encoder = Encoder.from_pretrained(checkpoint, dtype="float32")
    assert encoder.config.instruction_template == KALM_TEMPLATE
    trained = trainer.model.to_encoder()
    np.testing.assert_allclose(
        encoder.encode_query(["search index"]), trained.encode_query(["search index"]), atol=1e-5
    )


def test_too_little_data_for_one_batch_still_trains_every_example(
    tiny_qwen2_dir: Path, pairs: Path, tmp_path: Path
) -> None:
    trainer = make_trainer(
        tiny_qwen2_dir, pairs, tmp_path / "f", batch_size=len(load_pairs(pairs).examples) + 1
    )
    batches = list(trainer.get_train_dataloader().batch_sampler)  # type: ignore[arg-type]
    assert [sorted(b) for b in batches] == [list(range(len(trainer.examples)))]
    assert trainer.batch_plan_stats()["mixed_items"] == len(trainer.examples)


def test_teacher_scores_are_the_teachers_cosines(tiny_qwen2_dir: Path, pairs: Path) -> None:
    teacher = Encoder.from_pretrained(tiny_qwen2_dir, config=KALM, dtype="float32")
    examples = load_pairs(pairs).examples[:5]
    scored = add_teacher_scores(examples, teacher)
    for ex in scored:
        assert ex.teacher_scores is not None and len(ex.teacher_scores) == 1 + len(ex.negatives)
        query = teacher.encode_query([ex.query], instruction=ex.instruction)
        expected = (teacher.encode_document(list(ex.candidates)) @ query.T).ravel()
        np.testing.assert_allclose(ex.teacher_scores, expected, atol=1e-5)
