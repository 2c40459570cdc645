"""Soup ingredients chosen on purpose: the last N checkpoints, and a dev check that keeps only
checkpoints scoring close to the best. Real packaged MiniLM weights stand in for a stage's
checkpoints: two of them are damaged (like barely-trained early checkpoints)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from kalm_trainer.pipeline import run_recipe
from kalm_trainer.recipe import recipe_from_dict
from kalm_trainer.soup_select import accepted_by_dev, last_checkpoints
from safetensors.torch import load_file, save_file

from kalm_rag.errors import ConfigError
from kalm_rag.resolve import resolve_model
from tests.trainer.test_trainer_support import one_thread, write_debian_pairs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = (10, 20, 30, 40)
NOISE = {10: 0.5, 20: 0.2, 30: 0.0, 40: 1e-4}  # 10 and 20: damaged; 30 and 40: good


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose stage "finetune" saved four complete checkpoints."""
    source = resolve_model("all-MiniLM-L6-v2").folder
    out = tmp_path_factory.mktemp("run")
    weights = load_file(source / "model.safetensors")
    for step in STEPS:
        folder = out / "checkpoints" / "finetune" / f"checkpoint-{step}"
        shutil.copytree(source, folder)
        g = torch.Generator().manual_seed(step)
        noisy = {
            k: (v + NOISE[step] * torch.randn(v.shape, generator=g)).contiguous()
            if v.is_floating_point()
            else v
            for k, v in weights.items()
        }
        save_file(noisy, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "trainer_state.json").write_text("{}", encoding="utf-8")
    return out


def recipe(out: Path, soup: dict[str, object]) -> dict[str, object]:
    return {
        "run": {"name": "soup-test", "output_dir": str(out)},
        "data": {"pairs": {"step": "convert_pairs", "inputs": ["unused.jsonl"]}},
        "stage": {"finetune": {"data": ["@pairs"]}},
        "soup": {"models": ["@finetune:checkpoints"], **soup},
    }


def soup_stats(out: Path) -> dict[str, object]:
    stats: dict[str, object] = json.loads((out / "soup" / "manifest.json").read_text())["stats"]
    return stats


def averaged_steps(stats: dict[str, object]) -> list[int]:
    averaged = stats["averaged"]
    assert isinstance(averaged, list)
    return [int(Path(p).name.split("-")[1]) for p in averaged]


def test_last_n_keeps_the_last_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    result = run_recipe(recipe_from_dict(recipe(out, {"last_n": 2})), from_step="soup")
    assert averaged_steps(soup_stats(out)) == [30, 40]
    key = "encoder.layer.0.attention.self.query.weight"
    expected = torch.stack(
        [
            load_file(out / "checkpoints" / "finetune" / f"checkpoint-{s}" / "model.safetensors")[key]
            for s in (30, 40)
        ]
    ).mean(0)
    assert result.final_model is not None
    torch.testing.assert_close(load_file(result.final_model / "model.safetensors")[key], expected)


@pytest.mark.slow  # scores four MiniLM checkpoints on 30 pairs: ~1 min on 2 idle cores
def test_dev_check_keeps_only_checkpoints_close_to_the_best(
    run_dir: Path, train_data: Path, tmp_path: Path
) -> None:
    dev = write_debian_pairs(
        tmp_path / "dev.jsonl", train_data / "debian_pairs.jsonl", per_lang=60, langs=("en",)
    )
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    soup = {"dev_data": [str(dev)], "dev_tolerance": 0.02, "weights": [1, 1, 1, 3]}
    run_recipe(recipe_from_dict(recipe(out, soup)), from_step="soup")
    stats = soup_stats(out)
    scores = stats["dev_mrr_at_10"]
    assert isinstance(scores, dict) and len(scores) == 4
    by_step = {int(Path(p).name.split("-")[1]): s for p, s in scores.items()}
    assert by_step[10] < by_step[30] - 0.1 and by_step[20] < by_step[30] - 0.02
    assert averaged_steps(stats) == [30, 40]
    assert stats["weights"] == [1, 3]  # the accepted models keep their weights


def test_selection_rules_and_errors() -> None:
    folders = [Path(f"checkpoint-{s}") for s in STEPS]
    assert last_checkpoints(folders, 0) == folders and last_checkpoints(folders, 3) == folders[1:]
    assert last_checkpoints(folders, 9) == folders
    assert accepted_by_dev([0.5, 0.71, 0.7, 0.2], 0.01) == [1, 2]
    assert accepted_by_dev([0.5, 0.71, 0.7, 0.2], 0.0) == [1]
    with pytest.raises(ConfigError, match="last_n"):
        recipe_from_dict(recipe(Path("x"), {"last_n": -1}))
