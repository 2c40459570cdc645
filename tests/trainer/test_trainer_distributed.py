"""Two processes under torchrun (gloo on CPU) train exactly what one process does on the
whole batch: each rank takes its slice of every global batch, the loss scores against the
all-gathered batch, DDP averages the gradients, and only the main process writes files."""

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

from tests.trainer.test_trainer_support import write_word_pairs

pytestmark = pytest.mark.slow

RECIPE = """
[run]
name = "ddp"
seed = 1

[model]
base = "{model}"
is_causal = false
max_length = 32

[data.pairs]
step = "convert_pairs"
inputs = ["{pairs}"]

[stage.train]
data = ["@pairs"]
negatives = 2
batch_size = 8
{steps}
learning_rate = 1e-3
warmup_ratio = 0.0
save_steps = 0
logging_steps = 1

[stage.train.loss]
temperature = 0.05
gamma = 0.5
gather_across_processes = true
matryoshka_dims = []
matryoshka_weights = []
"""


def run(args: list[str], out: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [*args, f"run.output_dir={out}"], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]


# 2 x 16 pairs: 3 full single-task batches. 3 x 9 pairs: 3 full batches and a last mixed batch
# of the 3 leftovers, split 2 + 1 over the processes (uneven slices, all-gathered)
CASES = {
    "full": (("alpha", "beta"), 16, "max_steps = 3"),
    "uneven_last": (("alpha", "beta", "gamma"), 9, "epochs = 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_equal_one(tiny_qwen2_dir: Path, tmp_path: Path, case: str) -> None:
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed next to the interpreter")
    tasks, per_task, steps = CASES[case]
    pairs = write_word_pairs(tmp_path / "pairs.jsonl", per_task=per_task, tasks=tasks, negatives=2)
    recipe = tmp_path / "ddp.toml"
    recipe.write_text(RECIPE.format(model=tiny_qwen2_dir, pairs=pairs, steps=steps), encoding="utf-8")
    cli = ["-m", "kalm_trainer.cli", "run", str(recipe)]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    run([torchrun, "--standalone", "--nproc_per_node", "2", *cli], tmp_path / "two")
    run([sys.executable, *cli], tmp_path / "one")

    stats = {
        n: json.loads((tmp_path / n / "stages" / "train" / "manifest.json").read_text())["stats"]
        for n in ("one", "two")
    }
    assert stats["two"]["world_size"] == 2 and stats["one"]["world_size"] == 1
    assert stats["two"]["batch_plan"] == stats["one"]["batch_plan"]
    if case == "uneven_last":
        assert stats["one"]["steps"] == 4 and stats["one"]["batch_plan"]["items"] == 27
    assert stats["two"]["losses"] == pytest.approx(stats["one"]["losses"], rel=1e-4)
    one = load_file(tmp_path / "one" / "stages" / "train" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "stages" / "train" / "model" / "model.safetensors")
    for key, tensor in one.items():
        torch.testing.assert_close(two[key], tensor, atol=1e-5, rtol=1e-4, msg=key)
