"""SIGKILL a training run mid-way, run the same command again: it resumes from the last
complete checkpoint and ends with exactly the loss and weights of an uninterrupted run.

Tiny BERT has dropout, the loss mixes hard negatives and the batches cross an epoch boundary,
so equal results need the RNG states, the sampler's epoch and the mixing seed all restored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.test_trainer_support import write_word_pairs

pytestmark = pytest.mark.slow

RECIPE = """
[run]
name = "resume"
seed = 3

[model]
base = "{model}"
max_length = 32

[data.pairs]
step = "convert_pairs"
inputs = ["{pairs}"]

[stage.train]
data = ["@pairs"]
negatives = 2
batch_size = 6
max_steps = 10
learning_rate = 1e-3
warmup_ratio = 0.2
save_steps = 2
logging_steps = 1

[stage.train.loss]
temperature = 0.05
gamma = 0.5
mix_k = 2
mix_pool = 3
matryoshka_dims = [1024, 16]
matryoshka_weights = [1.0, 0.3]
"""


def command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kalm_trainer.cli", "run", str(recipe), f"run.output_dir={out}"]


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def stage_stats(out: Path) -> dict[str, object]:
    stats: dict[str, object] = json.loads((out / "stages" / "train" / "manifest.json").read_text())["stats"]
    return stats


def test_killed_run_resumes_to_the_same_result(tiny_bert_dir: Path, tmp_path: Path) -> None:
    pairs = write_word_pairs(tmp_path / "pairs.jsonl", per_task=12, negatives=3)
    recipe = tmp_path / "resume.toml"
    recipe.write_text(RECIPE.format(model=tiny_bert_dir, pairs=pairs), encoding="utf-8")

    # the uninterrupted reference runs alongside the run that gets killed (saves wall time)
    reference = tmp_path / "reference"
    log = (tmp_path / "reference.log").open("wb")
    reference_run = subprocess.Popen(command(recipe, reference), env=environment(), stdout=log, stderr=log)
    killed = tmp_path / "killed"
    checkpoints = killed / "checkpoints" / "train"
    process = subprocess.Popen(
        command(recipe, killed), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (checkpoints / "checkpoint-6" / "trainer_state.json").is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint-6 within 240 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (killed / "stages" / "train" / "manifest.json").exists()
    reference_run.wait(timeout=300)
    log.close()
    assert reference_run.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]

    subprocess.run(command(recipe, killed), env=environment(), check=True, capture_output=True, timeout=300)
    resumed, uninterrupted = stage_stats(killed), stage_stats(reference)
    assert resumed["resumed_from"] is not None and uninterrupted["resumed_from"] is None
    step = int(str(resumed["resumed_from"]).rsplit("-", 1)[1])
    assert 6 <= step < 10  # mid-epoch: 4 batches per epoch
    assert resumed["final_loss"] == pytest.approx(uninterrupted["final_loss"], abs=1e-6)
    assert resumed["losses"] == pytest.approx(uninterrupted["losses"], abs=1e-6)
    final_a = load_file(killed / "stages" / "train" / "model" / "model.safetensors")
    final_b = load_file(reference / "stages" / "train" / "model" / "model.safetensors")
    for key, tensor in final_b.items():
        torch.testing.assert_close(final_a[key], tensor, atol=1e-6, rtol=0, msg=key)
