"""Run a recipe: data steps, training stages, model soup - skipping what is already done.

Layout under the recipe's output folder::

    data/<name>/        examples.jsonl + manifest.json      (kalm_trainer.data.steps)
    checkpoints/<name>/ checkpoint-<step>/ ...              (resume points of a stage)
    stages/<name>/      model/ + manifest.json              (the stage's final model)
    soup/               model/ + manifest.json
    run.json            the recipe as run, every step's status, the final model

Every step's manifest records its config and the sha256 of its inputs; a re-run skips a step
whose manifest still matches, so changing one field re-runs that step and what follows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalm_rag.errors import ConfigError
from kalm_trainer import __version__
from kalm_trainer.data.config_base import config_to_dict
from kalm_trainer.data.files import atomic_text_file, sha256_file
from kalm_trainer.data.manifest import MANIFEST_NAME, Manifest, load_manifest, run_with_manifest
from kalm_trainer.recipe import Recipe

__all__ = ["RunResult", "StepOutcome", "resolve_step_name", "run_recipe"]

logger = logging.getLogger("kalm_trainer")


@dataclass(frozen=True)
class StepOutcome:
    name: str
    status: str  # "ran", "skipped (done)", "not run (before --from)", "not run (after --until)"
    output: Path
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    steps: list[StepOutcome]
    final_model: Path | None


def resolve_step_name(recipe: Recipe, name: str) -> str:
    """Accept ``stage.finetune`` or just ``finetune`` when that is unambiguous."""
    names = recipe.step_names
    if name in names:
        return name
    matches = [n for n in names if n.split(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(f"step {name!r} is not in recipe {recipe.source}; its steps: {names}")


class _Run:
    def __init__(self, recipe: Recipe, restart: bool) -> None:
        from kalm_trainer.processes import process_state

        self.recipe = recipe
        self.out = recipe.output_dir
        self.restart = restart
        self.state = process_state()

    # -- paths --------------------------------------------------------------------------------
    def data_dir(self, name: str) -> Path:
        return self.out / "data" / name

    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name

    def checkpoint_dir(self, name: str) -> Path:
        return self.out / "checkpoints" / name

    def base_model(self) -> str:
        return self.recipe.model.base

    def data_files(self, refs: Sequence[str], where: str) -> list[Path]:
        """Paths, or ``@step``: that step's examples.jsonl (all its outputs if it wrote none)."""
        files: list[Path] = []
        for ref in refs:
            if not ref.startswith("@"):
                files.append(Path(ref))
                continue
            manifest = load_manifest(self.data_dir(ref[1:]))
            if manifest is None:
                raise ConfigError(f"{where}: data step {ref[1:]!r} has not run yet (no {MANIFEST_NAME})")
            names = ["examples.jsonl"] if "examples.jsonl" in manifest.outputs else sorted(manifest.outputs)
            files.extend(manifest.output_dir / n for n in names)
        return files

    def model_ref(self, ref: str) -> str:
        if ref == "@base":
            return self.base_model()
        if ref.startswith("@"):
            return str(self.stage_dir(ref[1:]) / "model")
        return ref

    def stage_init(self, name: str) -> str:
        stage = self.recipe.stages[name]
        if stage.init:
            return self.model_ref(stage.init)
        names = list(self.recipe.stages)
        position = names.index(name)
        return self.model_ref(f"@{names[position - 1]}") if position else self.base_model()

    # -- steps --------------------------------------------------------------------------------
    def run_data(self, name: str) -> tuple[Manifest, bool]:
        from kalm_trainer.distributed_steps import run_data_step

        step = self.recipe.data[name]
        inputs = self.data_files(step.inputs, f"data.{name}.inputs")
        # encoding steps run on every process, sharded; the others on the main process while
        # the rest poll for its manifest (no collective that could time out)
        manifest = run_data_step(self.state, step.step, step.config, inputs, self.data_dir(name))
        return manifest, manifest.skipped

    def run_stage(self, name: str) -> tuple[Manifest, bool]:
        from kalm_trainer.stages import train_stage

        stage = self.recipe.stages[name]
        init = self.stage_init(name)
        files = self.data_files(stage.data, f"stage.{name}.data")
        inputs = [*files, *weight_files(init)]
        identity = {
            "stage": config_to_dict(stage),
            "model": config_to_dict(self.recipe.model),
            "init": init,
            "seed": self.recipe.run.seed,
        }
        found = load_manifest(self.stage_dir(name))
        if is_done(found, f"stage.{name}", identity, inputs):
            assert found is not None
            return found, True
        if stage.teacher:  # scored once for all processes (sharded), cached beside the data
            from kalm_trainer.distributed_steps import score_with_teacher

            teacher = self.model_ref(stage.teacher)
            scored = score_with_teacher(self.state, teacher, files, self.out / "teacher" / name)
            files = [scored.output_dir / "examples.jsonl"]
            stage = dataclasses.replace(stage, teacher="")
        result = train_stage(
            stage,
            model_section=self.recipe.model,
            init=init,
            data_files=files,
            checkpoint_dir=self.checkpoint_dir(name),
            seed=self.recipe.run.seed,
            identity={**identity, "inputs": [sha256_file(p) for p in inputs]},
            restart=self.restart,
        )

        def save(_config: Any, _inputs: list[Path], tmp: Path) -> dict[str, Any]:
            os.replace(result.folder, tmp / "model")  # same file system: a rename
            return result.stats

        folder = self.stage_dir(name)
        manifest = self._main_only(
            lambda: run_with_manifest(f"stage.{name}", save, None, identity, inputs, folder, force=True),
            folder,
        )
        return manifest, False

    def run_soup(self) -> tuple[Manifest, bool]:
        from kalm_trainer.soup import soup_checkpoints

        soup = self.recipe.soup
        assert soup is not None
        folders = self.soup_folders(soup.models, last_n=soup.last_n)
        if soup.weights and len(soup.weights) != len(folders):
            raise ConfigError(
                f"{self.recipe.source}: soup.weights has {len(soup.weights)} values for "
                f"{len(folders)} models ({[str(f) for f in folders]})"
            )
        dev_files = self.data_files(soup.dev_data, "soup.dev_data")
        inputs = [w for folder in folders for w in weight_files(str(folder))] + dev_files
        config = {
            "models": [str(f) for f in folders],
            "weights": list(soup.weights),
            "last_n": soup.last_n,
            "dev_data": [str(f) for f in dev_files],
            "dev_tolerance": soup.dev_tolerance,
            "dev_max_examples": soup.dev_max_examples,
        }

        def body(_config: Any, _inputs: list[Path], tmp: Path) -> dict[str, Any]:
            chosen, weights = list(folders), list(soup.weights)
            stats: dict[str, Any] = {"candidates": [str(f) for f in folders]}
            if dev_files:
                from kalm_trainer.soup_select import accepted_by_dev, load_dev_examples, score_models

                examples = load_dev_examples(
                    dev_files, max_examples=soup.dev_max_examples, seed=self.recipe.run.seed
                )
                scores = score_models(folders, examples)
                keep = accepted_by_dev(scores, soup.dev_tolerance)
                chosen = [folders[i] for i in keep]
                weights = [weights[i] for i in keep] if weights else []
                stats["dev_examples"] = len(examples)
                stats["dev_mrr_at_10"] = {str(f): s for f, s in zip(folders, scores, strict=True)}
                logger.info("soup: dev check keeps %d of %d models", len(chosen), len(folders))
            soup_checkpoints(chosen, tmp / "model", weights=weights or None)
            return {**stats, "models": len(chosen), "averaged": [str(f) for f in chosen], "weights": weights}

        folder = self.out / "soup"
        manifest = self._main_only(
            lambda: run_with_manifest("soup", body, None, config, inputs, folder, force=False), folder
        )
        return manifest, manifest.skipped

    def soup_folders(self, refs: Sequence[str], *, last_n: int = 0) -> list[Path]:
        from kalm_rag.resolve import resolve_model
        from kalm_trainer.checkpoints import complete_checkpoints
        from kalm_trainer.soup_select import last_checkpoints

        folders: list[Path] = []
        for ref in refs:
            if ref.startswith("@") and ref.endswith(":checkpoints"):
                stage = ref[1:].removesuffix(":checkpoints")
                found = complete_checkpoints(self.checkpoint_dir(stage))
                if not found:
                    raise ConfigError(
                        f"soup.models: {ref!r}: stage {stage!r} saved no checkpoints (save_steps?)"
                    )
                folders.extend(last_checkpoints(found, last_n))
            else:
                folders.append(resolve_model(self.model_ref(ref)).folder)
        return folders

    def _main_only(self, work: Callable[[], Manifest], folder: Path) -> Manifest:
        """Write on the main process; the others wait for it, then read its manifest."""
        with self.state.main_process_first():
            manifest = work() if self.state.is_main_process else load_manifest(folder)
        if manifest is None:
            raise ConfigError(f"the main process wrote no manifest in {folder}")
        return manifest


def weight_files(model: str) -> list[Path]:
    """The weight files of a local model folder (what a stage or soup depends on)."""
    from kalm_rag.resolve import resolve_model

    folder = resolve_model(model).folder
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return files


def is_done(found: Manifest | None, step: str, config: dict[str, Any], inputs: Sequence[Path]) -> bool:
    """Same rule as the data steps' manifests: step, config, version, input and output hashes."""
    wanted = json.loads(json.dumps(config))
    if found is None or found.step != step or found.config != wanted or found.trainer_version != __version__:
        return False
    if [i["sha256"] for i in found.inputs] != [sha256_file(p) for p in inputs]:
        return False
    return all(
        (found.output_dir / n).is_file() and sha256_file(found.output_dir / n) == d
        for n, d in found.outputs.items()
    )


def run_recipe(
    recipe: Recipe,
    *,
    from_step: str | None = None,
    until_step: str | None = None,
    restart: bool = False,
) -> RunResult:
    """Run the recipe's steps in order (``from_step``..``until_step``, both included)."""
    run = _Run(recipe, restart)
    names = recipe.step_names
    first = names.index(resolve_step_name(recipe, from_step)) if from_step else 0
    last = names.index(resolve_step_name(recipe, until_step)) if until_step else len(names) - 1
    if first > last:
        raise ConfigError(f"--from {from_step} comes after --until {until_step}")
    outcomes: list[StepOutcome] = []
    for position, name in enumerate(names):
        kind, _, short = name.partition(".")
        folder = {"data": run.data_dir, "stage": run.stage_dir}.get(kind, lambda _n: run.out / "soup")(short)
        if position < first or position > last:
            status = "not run (before --from)" if position < first else "not run (after --until)"
            outcomes.append(StepOutcome(name, status, folder))
            continue
        logger.info("step %s ...", name)
        if kind == "data":
            manifest, skipped = run.run_data(short)
        elif kind == "stage":
            manifest, skipped = run.run_stage(short)
        else:
            manifest, skipped = run.run_soup()
        outcomes.append(StepOutcome(name, "skipped (done)" if skipped else "ran", folder, manifest.stats))
        logger.info("step %s %s", name, "skipped (already done)" if skipped else "done")
    final = _final_model(run, names[last] if names else None)
    if run.state.is_main_process:
        _write_run_record(run, outcomes, final)
    return RunResult(outcomes, final)


def _final_model(run: _Run, last: str | None) -> Path | None:
    if last is None or last.startswith("data."):
        return None
    folder = run.out / "soup" / "model" if last == "soup" else run.stage_dir(last.split(".", 1)[1]) / "model"
    return folder if folder.is_dir() else None


def _write_run_record(run: _Run, outcomes: list[StepOutcome], final: Path | None) -> None:
    record = {
        "recipe": run.recipe.source,
        "config": run.recipe.raw,
        "steps": [{"name": o.name, "status": o.status, "output": str(o.output)} for o in outcomes],
        "final_model": None if final is None else str(final),
    }
    with atomic_text_file(run.out / "run.json") as handle:
        handle.write(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
