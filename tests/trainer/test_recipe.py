"""Recipes: TOML -> frozen dataclasses, command-line overrides, clear errors, shipped recipes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from kalm_trainer.cli import main
from kalm_trainer.data.filtering import FilterConfig
from kalm_trainer.pipeline import resolve_step_name
from kalm_trainer.recipe import builtin_recipes, load_recipe, parse_override

from kalm_rag.errors import ConfigError
from kalm_rag.instructions import KALM_TEMPLATE

GOOD = """
[run]
name = "demo"

[model]
base = "all-MiniLM-L6-v2"

[data.pairs]
step = "convert_pairs"
inputs = ["pairs.jsonl"]

[data.filtered]
step = "filter_ranking"
inputs = ["@pairs"]
config = { top_k = 20 }

[stage.finetune]
data = ["@filtered"]
negatives = 7

[stage.finetune.loss]
gamma = 0.5

[soup]
models = ["@finetune:checkpoints", "@base"]
"""


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parses_into_frozen_sections(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.run.name == "demo" and recipe.output_dir == Path("runs/demo")
    assert recipe.step_names == ["data.pairs", "data.filtered", "stage.finetune", "soup"]
    assert (
        isinstance(recipe.data["filtered"].config, FilterConfig)
        and recipe.data["filtered"].config.top_k == 20
    )
    stage = recipe.stages["finetune"]
    assert stage.negatives == 7 and stage.loss.gamma == 0.5 and stage.loss.temperature == 0.01
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.negatives = 3  # type: ignore[misc]


def test_overrides_reach_any_field(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, GOOD),
        [
            "stage.finetune.loss.gamma=0.25",
            "stage.finetune.batch_size=64",
            "data.filtered.config.top_k=5",
            'data.pairs.inputs=["a.jsonl", "b.jsonl"]',
            "model.base=/some/folder",
            "run.output_dir=out/x",
            "model.is_causal=false",
        ],
    )
    assert recipe.stages["finetune"].loss.gamma == 0.25 and recipe.stages["finetune"].batch_size == 64
    assert recipe.data["filtered"].config.top_k == 5
    assert recipe.data["pairs"].inputs == ("a.jsonl", "b.jsonl")
    assert recipe.model.base == "/some/folder" and recipe.model.is_causal is False
    assert recipe.output_dir == Path("out/x")
    assert parse_override("run.name=2024") == (["run", "name"], 2024)
    # a string field keeps the text even when it looks like a number
    assert load_recipe(write(tmp_path, GOOD), ["run.name=2024"]).run.name == "2024"


@pytest.mark.parametrize(
    ("text", "override", "message"),
    [
        ("[run\nname = 1", None, r"recipe\.toml: malformed TOML"),
        (GOOD + "\n[trainer]\nx = 1\n", None, r"recipe\.toml: unknown top-level table\(s\) \['trainer'\]"),
        (GOOD, "stage.finetune.negatvies=3", r"'negatvies'.*recipe\.toml: \[stage\.finetune\]"),
        (
            GOOD,
            "stage.finetune.loss.gama=1",
            r"recipe\.toml: \[stage\.finetune\]\.loss: unknown key\(s\) \['gama'\]",
        ),
        (GOOD, "stage.finetune.loss.gamma=-1", r"\[stage\.finetune\]\.loss: gamma must be"),
        (
            GOOD,
            "data.filtered.config.top_K=3",
            r"recipe\.toml: \[data\.filtered\]: unknown key\(s\) \['top_K'\]",
        ),
        (GOOD, "data.filtered.step=filtre", r"\[data\.filtered\]: unknown data step 'filtre'"),
        (GOOD, "model.lora.rank=4", r"recipe\.toml: \[model\].*rank"),
        (GOOD, "data.nosuch.step=x", r"has no table \[data\.nosuch\]"),
        (GOOD, "stage.finetune.batch_size=zero", r"\[stage\.finetune\].*batch_size"),
        (GOOD, "stage.finetune.task_ratio=2", r"task_ratio must be within"),
        (GOOD, 'stage.finetune.data=["@nothing"]', r"stage\.finetune\.data: '@nothing' is not a data step"),
        (
            GOOD,
            'data.filtered.inputs=["@filtered"]',
            r"data\.filtered\.inputs: '@filtered' is not an earlier",
        ),
        (GOOD, 'stage.finetune.init="@later"', r"stage\.finetune\.init: '@later'"),
        (GOOD, 'soup.models=["@nope"]', r"soup\.models: '@nope' names no stage"),
        (
            GOOD,
            "stage.nosuch.negatives=1",
            r"override 'stage\.nosuch\.negatives=1': .* has no table \[stage\.nosuch\]",
        ),
        (GOOD, "negatives", r"must look like section\.key=value"),
    ],
)
def test_errors_name_the_file_and_the_key(
    tmp_path: Path, text: str, override: str | None, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path, [override] if override else [])


def test_step_names_resolve_short_and_long(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert resolve_step_name(recipe, "finetune") == "stage.finetune"
    assert resolve_step_name(recipe, "data.pairs") == "data.pairs"
    with pytest.raises(ConfigError, match="not in recipe"):
        resolve_step_name(recipe, "pretrain")


def test_shipped_recipes_load_with_the_published_values() -> None:
    assert builtin_recipes() == ["cpu_domain", "kalm_v2", "multilingual", "tiny"]
    v2 = load_recipe("kalm_v2")
    assert v2.model.is_causal is False and v2.model.pooling == "mean" and v2.model.max_length == 512
    assert v2.model.instruction_template == KALM_TEMPLATE
    assert v2.model.matryoshka_dims == (896, 512, 256, 128, 64)
    finetune = v2.stages["finetune"]
    assert finetune.negatives == 7 and finetune.learning_rate == 1e-5 and finetune.warmup_ratio == 0.1
    assert finetune.loss.temperature == 0.01 and finetune.loss.gamma > 0 and finetune.loss.mix_k > 0
    assert finetune.loss.matryoshka_weights == (1.0, 0.3, 0.2, 0.1, 0.1)
    assert v2.stages["pretrain"].negatives == 0 and v2.stages["pretrain"].loss.gamma == 0
    assert v2.data["mined"].config.n == 7 and tuple(v2.data["mined"].config.window) == (50, 100)
    assert v2.soup is not None
    domain = load_recipe("cpu_domain")
    assert domain.model.base == "multilingual-e5-small" and domain.stages["finetune"].precision == "fp32"
    assert load_recipe("tiny").step_names[-1] == "soup"
    multi = load_recipe("multilingual")  # all three shared training files, each its own task
    assert [Path(step.inputs[0]).name for step in list(multi.data.values())[:3]] == [
        "debian_pairs.jsonl",
        "gettext_pairs.jsonl",
        "manpage_pairs.jsonl",
    ]
    gettext = multi.data["gettext"].config
    assert gettext.task_type == "bitext" and gettext.task_by == "lang" and gettext.sample > 0
    assert all(multi.data[name].config.sample_by == "lang" for name in ("debian", "gettext", "manpage"))
    assert multi.soup is not None and multi.soup.models == ("@base", "@finetune:checkpoints")
    checkpoints = multi.stages["finetune"].max_steps // multi.stages["finetune"].save_steps
    assert len(multi.soup.weights) == 1 + checkpoints  # one weight per soup ingredient


def test_cli_show_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(write(tmp_path, GOOD)), "stage.finetune.loss.gamma=0.75"]) == 0
    shown = capsys.readouterr().out
    assert '"gamma": 0.75' in shown and "data.pairs -> data.filtered -> stage.finetune -> soup" in shown
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "neither a file nor a shipped recipe" in capsys.readouterr().err
    assert main(["list"]) == 0
    assert "mine_negatives" in capsys.readouterr().out
    # overrides are read after an option too (they used to be "unrecognized arguments")
    assert main(["run", str(write(tmp_path, GOOD)), "--until", "data.pairs", "stage.finetune.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", str(write(tmp_path, GOOD)), "--until", "data.pairs", "--bogus"])
