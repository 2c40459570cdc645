"""Long steps say that they are alive and how long is left: log lines with an ETA for
filtering, mining and training."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from kalm_trainer.data.filtering import filter_ranking_consistency
from kalm_trainer.data.mining import mine_hard_negatives
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.progress import ProgressLog, format_seconds

from kalm_rag import Encoder
from tests.trainer.test_trainer import make_trainer
from tests.trainer.test_trainer_support import one_thread, write_word_pairs  # noqa: F401


def messages(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def test_progress_log_reports_share_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kalm_trainer")
    progress = ProgressLog("work", 4, every_s=0.0)
    progress.update(1, "task a")
    progress.update(3)
    lines = messages(caplog, "work:")
    assert len(lines) == 2
    assert lines[0].startswith("work: 1/4 examples (25%) [task a], elapsed 0:00, ETA ")
    assert lines[1].startswith("work: 4/4 examples (100%), elapsed") and lines[1].endswith("ETA 0:00")
    assert format_seconds(3725) == "1:02:05" and format_seconds(65.4) == "1:05"


def test_filtering_and_mining_log_progress(
    default_encoder: Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kalm_trainer")
    examples = [
        TrainingExample(f"package {i} tool", (f"a tool for task {i}",), task=task)
        for task in ("a", "b")
        for i in range(6)
    ]
    filter_ranking_consistency(examples, default_encoder, top_k=5)
    mine_hard_negatives(examples, default_encoder, n=2, window=(0, 6))
    for step in ("filter_ranking", "mine_negatives"):
        lines = messages(caplog, f"{step}:")
        assert lines and lines[-1].startswith(f"{step}: 12/12 examples (100%)") and "ETA" in lines[-1]


@pytest.mark.usefixtures("one_thread")
def test_training_logs_steps_with_eta(
    tiny_qwen2_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kalm_trainer")
    pairs = write_word_pairs(tmp_path / "pairs.jsonl", per_task=12, negatives=3)
    make_trainer(tiny_qwen2_dir, pairs, tmp_path / "ckpt", max_steps=2).train()
    lines = messages(caplog, "train: step")
    assert [line.split(" (")[0] for line in lines] == ["train: step 1/2", "train: step 2/2"]
    assert all("loss" in line and "s/step" in line and "ETA" in line for line in lines)
