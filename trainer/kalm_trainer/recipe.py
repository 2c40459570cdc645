"""A recipe is one TOML file: data steps, then training stages, then an optional model soup.

    [run]                      name, output_dir, seed
    [model]                    base model and how it embeds (+ [model.lora])
    [data.<name>]              step = "<registered step>", inputs = [...], [data.<name>.config]
    [stage.<name>]             training stage (+ [stage.<name>.loss]: LossConfig fields)
    [soup]                     models = ["@finetune:checkpoints"], weights = [...]

Tables run in file order. Inputs name files or earlier steps (``"@pairs"``). Any field can be
overridden from the command line with a dotted key, e.g. ``stage.finetune.loss.gamma=0.5``
(values are TOML: ``7``, ``true``, ``[1, 2]``, ``"text"``; bare words are strings).
Malformed TOML, unknown keys and dangling references raise ConfigError naming file and key.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError
from kalm_trainer.losses import LossConfig
from kalm_trainer.recipe_schema import DataStep, ModelSection, RunSection, SoupSection, StageSection

__all__ = ["Recipe", "apply_overrides", "builtin_recipes", "load_recipe", "parse_override", "recipe_path"]

_TOP_LEVEL = {"run", "model", "data", "stage", "soup"}


@dataclass(frozen=True)
class Recipe:
    source: str  # the file it came from (for messages)
    run: RunSection
    model: ModelSection
    data: dict[str, DataStep]  # in file order
    stages: dict[str, StageSection]  # in file order
    soup: SoupSection | None
    raw: dict[str, Any]  # the TOML after overrides (recorded with the run)

    @property
    def output_dir(self) -> Path:
        return Path(self.run.output_dir or os.path.join("runs", self.run.name))

    @property
    def step_names(self) -> list[str]:
        """Every step in run order: ``data.<name>``, ``stage.<name>``, then ``soup``."""
        names = [f"data.{n}" for n in self.data] + [f"stage.{n}" for n in self.stages]
        return [*names, "soup"] if self.soup is not None else names


def builtin_recipes() -> list[str]:
    folder = resources.files("kalm_trainer") / "recipes"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def recipe_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A recipe file, or the name of a shipped one (``kalm_v2``, ``cpu_domain``, ``tiny``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(".toml")
    if name in builtin_recipes():
        return Path(str(resources.files("kalm_trainer") / "recipes" / f"{name}.toml"))
    raise ConfigError(
        f"recipe {str(name_or_path)!r} is neither a file nor a shipped recipe {builtin_recipes()}"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"stage.finetune.loss.gamma=0.5"`` -> (["stage", "finetune", "loss", "gamma"], 0.5)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ConfigError(
            f"override {text!r} must look like section.key=value (e.g. stage.finetune.epochs=2)"
        )
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()  # a bare word or path: take it as a string
    return [p.strip() for p in parts], parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], *, source: str) -> dict[str, Any]:
    """A copy of ``raw`` with each override set; new data steps and stages cannot be created."""
    result = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        table: dict[str, Any] = result
        for depth, key in enumerate(keys[:-1]):
            nested = table.get(key)
            # sub-tables (stage.x.loss, model.lora) may be absent: create them; but a data step
            # or a stage cannot be invented by an override (a typo would silently add one)
            if nested is None and not (depth == 1 and keys[0] in ("data", "stage")):
                nested = table[key] = {}
            if not isinstance(nested, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {text!r}: {source} has no table [{where}]")
            table = nested
        old = table.get(keys[-1])
        table[keys[-1]] = str(value) if isinstance(old, str) and not isinstance(value, str) else value
    return result


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    file = recipe_path(path)
    source = str(file)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {source}: {exc}") from None
    return recipe_from_dict(apply_overrides(raw, overrides, source=source), source=source)


def recipe_from_dict(raw: Mapping[str, Any], *, source: str = "<recipe>") -> Recipe:
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level table(s) {unknown}; allowed: {sorted(_TOP_LEVEL)}")
    run = RunSection.from_mapping(_table(raw, "run", source), where=f"{source}: [run]")
    model = ModelSection.from_mapping(_table(raw, "model", source), where=f"{source}: [model]")
    data = {
        name: _data_step(name, _table(raw["data"], name, source, f"data.{name}"), source)
        for name in _table(raw, "data", source)
    }
    stages = {
        name: _stage(_table(raw["stage"], name, source, f"stage.{name}"), f"{source}: [stage.{name}]")
        for name in _table(raw, "stage", source)
    }
    soup = None
    if "soup" in raw:
        soup = SoupSection.from_mapping(_table(raw, "soup", source), where=f"{source}: [soup]")
    recipe = Recipe(source, run, model, data, stages, soup, dict(raw))
    check_references(recipe)
    return recipe


def _table(raw: Mapping[str, Any], key: str, source: str, where: str | None = None) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{where or key}] must be a table, got {type(value).__name__}")
    return value


def _data_step(name: str, table: Mapping[str, Any], source: str) -> DataStep:
    from kalm_trainer.data.steps import parse_step_config

    where = f"{source}: [data.{name}]"
    unknown = sorted(set(table) - {"step", "inputs", "config"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: ['config', 'inputs', 'step']")
    step = table.get("step")
    if not isinstance(step, str):
        raise ConfigError(f"{where}: 'step' must name a pipeline step (e.g. step = \"mine_negatives\")")
    inputs = table.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs) or not inputs:
        raise ConfigError(f"{where}: 'inputs' must be a non-empty list of paths or \"@step\" references")
    try:
        config = parse_step_config(step, _table(table, "config", source, f"data.{name}.config"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return DataStep(name, step, tuple(inputs), config)


def _stage(table: Mapping[str, Any], where: str) -> StageSection:
    values = dict(table)
    loss_table = values.pop("loss", {})
    if not isinstance(loss_table, dict):
        raise ConfigError(f"{where}: 'loss' must be a table of LossConfig fields")
    known = {f.name for f in dataclasses.fields(LossConfig)}
    unknown = sorted(set(loss_table) - known)
    if unknown:
        raise ConfigError(f"{where}.loss: unknown key(s) {unknown}; valid keys: {sorted(known)}")
    try:
        loss = LossConfig(**loss_table)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}.loss: {exc}") from None
    stage = StageSection.from_mapping(values, where=where)
    return dataclasses.replace(stage, loss=loss)


def check_references(recipe: Recipe) -> None:
    """Every "@name" must point at an earlier step of the right kind."""
    source = recipe.source
    seen_data: list[str] = []
    for name, step in recipe.data.items():
        for ref in step.inputs:
            if ref.startswith("@") and ref[1:] not in seen_data:
                raise ConfigError(
                    f"{source}: data.{name}.inputs: {ref!r} is not an earlier data step (have: {seen_data})"
                )
        seen_data.append(name)
    seen_stages: list[str] = []
    for name, stage in recipe.stages.items():
        if not stage.data:
            raise ConfigError(f'{source}: stage.{name}.data is empty; give training files or "@<data step>"')
        for ref in stage.data:
            if ref.startswith("@") and ref[1:] not in recipe.data:
                raise ConfigError(
                    f"{source}: stage.{name}.data: {ref!r} is not a data step ({list(recipe.data)})"
                )
        if stage.init.startswith("@") and stage.init not in ("@base", *(f"@{s}" for s in seen_stages)):
            raise ConfigError(
                f'{source}: stage.{name}.init: {stage.init!r} is neither "@base" '
                f"nor an earlier stage {seen_stages}"
            )
        seen_stages.append(name)
    if recipe.soup is not None:
        if not recipe.soup.models:
            raise ConfigError(
                f'{source}: soup.models is empty; list "@<stage>", "@<stage>:checkpoints" or folders'
            )
        for ref in recipe.soup.models:
            stage_name = ref[1:].removesuffix(":checkpoints")
            if ref.startswith("@") and ref != "@base" and stage_name not in recipe.stages:
                raise ConfigError(f"{source}: soup.models: {ref!r} names no stage ({list(recipe.stages)})")
