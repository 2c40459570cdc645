"""The shipped tiny recipe under ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo), data steps
included, both stages streaming from the on-disk index and fine-tuning with GradCache, reproduces
one process with the same global batch: the same data-step outputs, the same examples per step
(equal losses) and the same weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.test_e2e_tiny import overrides
from tests.trainer.test_trainer_support import write_debian_pairs

pytestmark = pytest.mark.slow

SETTINGS = [
    "stage.pretrain.streaming=true",
    "stage.finetune.streaming=true",
    "stage.pretrain.epochs=1",
    # hard-negative mixing draws per rank (seeded by rank): one process draws other mixes
    "stage.finetune.loss.mix_k=0",
    # GradCache under DDP: chunks replayed without gradient sync until the last one
    "stage.finetune.gradcache_chunk=4",
]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "ACCELERATE_USE_CPU": "true",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_two_processes_reproduce_one(tiny_qwen2_dir: Path, train_data: Path, tmp_path: Path) -> None:
    accelerate = Path(sys.executable).parent / "accelerate"
    if shutil.which(str(accelerate)) is None:
        pytest.skip("accelerate is not installed next to the interpreter")
    pairs = write_debian_pairs(tmp_path / "pairs.jsonl", train_data / "debian_pairs.jsonl",
                               per_lang=24, langs=("en", "de"))  # fmt: skip
    outs = {n: tmp_path / n for n in ("one", "two")}
    cli = ["-m", "kalm_trainer.cli", "run", "tiny"]
    # `--cpu --num_processes 2` would start ONE process (accelerate's simple launcher); --multi_gpu
    # starts torchrun's two, and on a machine without CUDA they train on CPU with gloo
    launch = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    run([*launch, *cli, *overrides(tiny_qwen2_dir, pairs, outs["two"]), *SETTINGS])
    run([sys.executable, *cli, *overrides(tiny_qwen2_dir, pairs, outs["one"]), *SETTINGS])

    for step in ("pairs", "filtered", "mined"):  # the data steps wrote the same examples
        files = {n: (out / "data" / step / "examples.jsonl").read_bytes() for n, out in outs.items()}
        assert files["one"] == files["two"], step
    for stage in ("pretrain", "finetune"):
        stats = {
            n: json.loads((out / "stages" / stage / "manifest.json").read_text())["stats"]
            for n, out in outs.items()
        }
        assert stats["two"]["world_size"] == 2 and stats["one"]["world_size"] == 1
        assert stats["two"]["streaming"] and stats["one"]["examples"] == stats["two"]["examples"]
        assert stats["two"]["steps"] == stats["one"]["steps"]
        assert stats["two"]["losses"] == pytest.approx(stats["one"]["losses"], rel=1e-3, abs=1e-4), stage
    one = load_file(outs["one"] / "soup" / "model" / "model.safetensors")
    two = load_file(outs["two"] / "soup" / "model" / "model.safetensors")
    for key, tensor in one.items():
        torch.testing.assert_close(two[key], tensor, atol=1e-4, rtol=1e-3, msg=key)
