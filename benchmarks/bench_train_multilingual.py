"""Multilingual multi-task fine-tuning on a 2-core CPU: the shipped ``multilingual`` recipe.

Runs ``kalm-train run multilingual`` (through its Python API, same recipe, same defaults) from
multilingual-e5-small on the three training files in shared/data/train (Debian descriptions,
gettext bitext, man pages; each its own task, seeded subsamples chosen in the recipe) and reports
the four dev tasks in shared/data/dev before and after, per language: DebianDescRetrieval and
ManPageRetrieval nDCG@10, GettextBitextMining accuracy, LeeSTS Spearman. Then an ablation: each
technique off in turn (filtering, hard negatives, task batching, focal, mixing, soup, and the
multi-task mix itself: Debian pairs only), over several seeds, in shorter runs evaluated at a
reduced max length (both said in the report), so that every effect is a mean +- std.

    python benchmarks/bench_train_multilingual.py                       # everything (~2 h on 2 cores)
    python benchmarks/bench_train_multilingual.py --phases baseline main  # before/after only (~50 min)
    python benchmarks/bench_train_multilingual.py --phases ablation --seeds 0 1
    python benchmarks/bench_train_multilingual.py --render                # .md/.png from the .json

Results accumulate in benchmarks/results/train_multilingual.json (the ablation alone:
train_multilingual_ablation.json, so both can run at once), each evaluation saved as soon as it
is done (a re-run skips finished work); train_multilingual.md and .png render both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
from _train_multilingual_report import (
    AFTER,
    CHECKPOINT_SOUP,
    EVAL_MAX_LENGTH,
    LAST,
    TASKS,
    markdown,
    plots,
)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/OpenMP start: see DESIGN.md

RECIPE = "multilingual"
BASE_MODEL = "multilingual-e5-small"
OUT = _common.RESULTS_DIR / "train_multilingual.json"
#: the ablation has its own file, so that it can run while the main phase runs in another process
ABLATION_OUT = _common.RESULTS_DIR / "train_multilingual_ablation.json"


# -- evaluation ----------------------------------------------------------------------------------
def evaluate(model: str | Path, max_length: int) -> dict[str, Any]:
    """Main metric of every dev task per language, plus the summaries of TARGETS and seconds
    per task. Same prompts, metrics and numbers as bench_retrieval.py (retrieval: e5's
    ``query: `` / ``passage: ``; bitext and STS symmetric, ``query: `` on both sides; trec_eval
    nDCG@10, nearest-neighbour bitext accuracy, scipy Spearman), but every distinct text is
    encoded once (LeeSTS's 400 sides are 50 documents). LeeSTS (50 documents, seconds) is always
    read at EVAL_MAX_LENGTH; ``max_length`` applies to the other three tasks."""
    from kalm_rag import Encoder

    encoder = Encoder.from_pretrained(str(model), max_length=max_length, dtype="float32")
    full = encoder
    if max_length != EVAL_MAX_LENGTH:
        full = Encoder.from_pretrained(str(model), max_length=EVAL_MAX_LENGTH, dtype="float32")
    scores: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for task in TASKS:
        started = time.perf_counter()
        scores[task] = EVALUATORS[task](full if task == "LeeSTS" else encoder, _common.DEV_DATA / task)
        seconds[task] = round(time.perf_counter() - started, 1)
    return {"scores": scores, "summary": summarize(scores), "seconds": seconds, "max_length": max_length}


def eval_retrieval(encoder: Any, folder: Path) -> dict[str, float]:
    from kalm_rag.beir import load_retrieval_task, read_qrels
    from kalm_rag.eval.datasets import ALL_LANGUAGES, retrieval_splits
    from kalm_rag.eval.metrics import retrieval_metrics, top_k_run
    from kalm_rag.eval.scoring import dense_scores

    task = load_retrieval_task(folder, split="test")
    doc_ids, query_ids = list(task.corpus), list(task.queries)
    matrix = dense_scores(encoder, [task.queries[q] for q in query_ids], [task.corpus[d] for d in doc_ids])
    run = top_k_run(matrix, query_ids, doc_ids, k=100)
    result: dict[str, float] = {}
    for language, split in retrieval_splits(folder).items():
        qrels = task.qrels if language == ALL_LANGUAGES else read_qrels(folder / "qrels" / f"{split}.tsv")
        result[language] = round(float(retrieval_metrics(qrels, run)["ndcg@10"]), 4)
    others = [v for k, v in result.items() if k not in (ALL_LANGUAGES, "en")]
    result["non-en mean"] = round(statistics.fmean(others), 4)
    return result


def eval_bitext(encoder: Any, folder: Path) -> dict[str, float]:
    from kalm_rag.eval.datasets import load_bitext_task
    from kalm_rag.eval.metrics import bitext_accuracy
    from kalm_rag.eval.scoring import encode_side

    result: dict[str, float] = {}
    for pair in load_bitext_task(folder):
        left = encode_side(encoder, pair.sentences1, side="query", task="bitext")
        right = encode_side(encoder, pair.sentences2, side="document", task="bitext")
        result[pair.name] = round(float(bitext_accuracy(encoder.similarity(left, right))), 4)
    result["mean"] = round(statistics.fmean(result.values()), 4)
    return result


def eval_sts(encoder: Any, folder: Path) -> dict[str, float]:
    import numpy as np

    from kalm_rag.eval.datasets import load_sts_task
    from kalm_rag.eval.metrics import spearman
    from kalm_rag.eval.scoring import encode_side

    pairs = load_sts_task(folder)
    texts = sorted(set(pairs.sentences1) | set(pairs.sentences2))
    row = {text: i for i, text in enumerate(texts)}
    # both sides are "query" sides for a symmetric task (scoring.encode_side's policy)
    vectors = encode_side(encoder, texts, side="query", task="sts")
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    left = vectors[[row[t] for t in pairs.sentences1]]
    right = vectors[[row[t] for t in pairs.sentences2]]
    return {"all": round(float(spearman((left * right).sum(axis=1), pairs.scores)), 4)}


EVALUATORS = {
    "DebianDescRetrieval": eval_retrieval,
    "ManPageRetrieval": eval_retrieval,
    "GettextBitextMining": eval_bitext,
    "LeeSTS": eval_sts,
}


def summarize(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    return {
        "debian_en": scores["DebianDescRetrieval"]["en"],
        "debian_non_en": scores["DebianDescRetrieval"]["non-en mean"],
        "manpage_en": scores["ManPageRetrieval"]["en"],
        "manpage_non_en": scores["ManPageRetrieval"]["non-en mean"],
        "gettext": scores["GettextBitextMining"]["mean"],
        "lee": scores["LeeSTS"]["all"],
    }


# -- training ------------------------------------------------------------------------------------
def run_recipe(out: Path, overrides: list[str], *, from_step: str | None = None) -> dict[str, Any]:
    """``kalm-train run multilingual [overrides]`` into ``out``; timings per step."""
    from kalm_trainer.pipeline import run_recipe as run
    from kalm_trainer.recipe import load_recipe

    started = time.perf_counter()
    result = run(load_recipe(RECIPE, [*overrides, f"run.output_dir={out}"]), from_step=from_step)
    stage = json.loads((out / "stages" / "finetune" / "manifest.json").read_text())["stats"]
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "overrides": overrides,
        "steps": [{"name": s.name, "status": s.status} for s in result.steps],
        "stage_model": str(out / "stages" / "finetune" / "model"),
        "final_model": str(result.final_model),
        "train_stats": {
            k: stage.get(k) for k in ("examples", "steps", "final_loss", "tokens_seen", "train_runtime_s")
        },
    }


def data_report(out: Path) -> dict[str, Any]:
    """Counts of every data step (manifests) and the examples per task the stage trained on."""
    report: dict[str, Any] = {}
    for manifest in sorted((out / "data").glob("*/manifest.json")):
        stats = json.loads(manifest.read_text())["stats"]
        report[manifest.parent.name] = {k: v for k, v in stats.items() if k != "skipped_lines"}
    return report


def step_seconds(out: Path) -> dict[str, float]:
    """Seconds of each pipeline step from its manifest; training from the stage's runtime."""
    seconds: dict[str, float] = {}
    for manifest in [*sorted(out.glob("data/*/manifest.json")), out / "soup" / "manifest.json"]:
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            name = "soup" if manifest.parent.name == "soup" else f"data.{manifest.parent.name}"
            seconds[name] = round(float(data.get("seconds", 0.0)), 1)
    stage = json.loads((out / "stages" / "finetune" / "manifest.json").read_text())["stats"]
    seconds["stage.finetune (training)"] = round(float(stage.get("train_runtime_s", 0.0)), 1)
    return seconds


# -- the report file -----------------------------------------------------------------------------
class Report:
    """The JSON result, saved after every piece of work (atomic), so nothing done is lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.data.setdefault("evals", {})
        self.data.setdefault("runs", {})
        self.data.setdefault("timings_s", {})

    def save(self) -> None:
        _common.write_json(self.path, self.data)
        _common.write_text_atomic(OUT.with_suffix(".md"), markdown(merged_results()))

    def eval_once(self, key: str, model: str | Path, max_length: int) -> dict[str, Any]:
        if key not in self.data["evals"]:
            started = time.perf_counter()
            self.data["evals"][key] = {**evaluate(model, max_length), "model": str(model)}
            self.data["timings_s"][f"eval {key}"] = round(time.perf_counter() - started, 1)
            print(f"eval {key}: {self.data['evals'][key]['summary']}", flush=True)
            self.save()
        result: dict[str, Any] = self.data["evals"][key]
        return result

    def run_once(
        self, key: str, out: Path, overrides: list[str], from_step: str | None = None
    ) -> dict[str, Any]:
        done = self.data["runs"].get(key)
        if done is None or not Path(done["final_model"]).exists():
            run = run_recipe(out, overrides, from_step=from_step)
            self.data["runs"][key] = run
            self.data["timings_s"][f"run {key}"] = run["seconds"]
            print(f"run {key}: {run['seconds']} s, {run['train_stats']}", flush=True)
            self.save()
        result: dict[str, Any] = self.data["runs"][key]
        return result


def merged_results() -> dict[str, Any]:
    """The main file and the ablation file as one report (the ablation's own keys prefixed)."""
    main = json.loads(OUT.read_text()) if OUT.is_file() else {}
    ablation = json.loads(ABLATION_OUT.read_text()) if ABLATION_OUT.is_file() else {}
    merged = {**ablation, **main}
    for key in ("evals", "runs", "timings_s"):
        merged[key] = {**ablation.get(key, {}), **main.get(key, {})}
    for key in ("machine", "config"):
        if key in ablation:
            merged[f"ablation_run_{key}"] = ablation[key]
    return merged


# -- phases --------------------------------------------------------------------------------------


def phase_main(report: Report, work: Path) -> None:
    report.eval_once("e5 (before)", BASE_MODEL, EVAL_MAX_LENGTH)
    out = work / "main"
    started = time.perf_counter()
    run = report.run_once("main", out, [])
    seconds = step_seconds(out)
    report.data["main"] = {
        # the recipe's time from its own records (a re-run that only redoes the soup stays right)
        "wall_seconds": round(sum(seconds.values()), 1),
        "data": data_report(out),
        "step_seconds": seconds,
    }
    report.save()
    report.eval_once(AFTER, run["final_model"], EVAL_MAX_LENGTH)
    report.eval_once(LAST, run["stage_model"], EVAL_MAX_LENGTH)
    report.eval_once(CHECKPOINT_SOUP, checkpoint_soup(out), EVAL_MAX_LENGTH)
    print(f"main phase {time.perf_counter() - started:.0f} s", flush=True)


def checkpoint_soup(out: Path) -> Path:
    """The soup without the base model: every checkpoint of the run, uniform weights."""
    from kalm_trainer.checkpoints import complete_checkpoints
    from kalm_trainer.soup import soup_checkpoints

    model = out / "soup-checkpoints-only" / "model"
    if not model.is_dir():
        soup_checkpoints(complete_checkpoints(out / "checkpoints" / "finetune"), model)
    return model


def ablation_variants(work: Path, main_out: Path) -> dict[str, Callable[[], list[str]]]:
    """Overrides per ablation variant (made when the variant runs: "no filtering" mines first);
    all train from the main run's data steps."""
    mined = main_out / "data" / "mined" / "examples.jsonl"

    def on(path: Path, *more: str) -> Callable[[], list[str]]:
        return lambda: [f'stage.finetune.data=["{path}"]', *more]

    return {
        "reference (all on)": on(mined),
        "no multi-task mix (Debian pairs only)": lambda: on(debian_only(work, mined))(),
        "no hard negatives (in-batch only)": on(mined, "stage.finetune.negatives=0"),
        "no task batching (random batches)": on(mined, "stage.finetune.task_ratio=0.0"),
        "no focal (gamma 0)": on(mined, "stage.finetune.loss.gamma=0.0"),
        "no hard-negative mixing": on(mined, "stage.finetune.loss.mix_k=0"),
        "no filtering": lambda: on(unfiltered_mined(work, main_out))(),
    }


def unfiltered_mined(work: Path, main_out: Path) -> Path:
    """Hard negatives mined (with the recipe's own mining config) from the unfiltered examples."""
    from kalm_trainer.data.steps import run_step
    from kalm_trainer.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    filtered = recipe.data["filtered"]
    inputs = [main_out / "data" / ref[1:] / "examples.jsonl" for ref in filtered.inputs]
    manifest = run_step("mine_negatives", recipe.data["mined"].config, inputs, work / "mined-unfiltered")
    return manifest.output_path()


def debian_only(work: Path, mined: Path) -> Path:
    """The reference's training examples restricted to the Debian task (same filtering/mining)."""
    out = work / "mined-debian-only.jsonl"
    if not out.is_file():
        lines = [line for line in mined.read_text(encoding="utf-8").splitlines(keepends=True)
                 if json.loads(line)["task"].startswith("debian")]  # fmt: skip
        _common.write_text_atomic(out, "".join(lines))
    return out


def phase_ablation(
    report: Report, work: Path, seeds: list[int], steps: int, max_length: int, *, wait: bool = False
) -> None:
    main_out = work / "main"
    report.data["ablation_config"] = {"steps": steps, "eval_max_length": max_length, "seeds": seeds}
    report.eval_once(f"e5 (before) @{max_length}", BASE_MODEL, max_length)
    mined_manifest = main_out / "data" / "mined" / "manifest.json"
    while wait and not mined_manifest.is_file():  # the main phase, in another process, makes it
        time.sleep(20)
    if not mined_manifest.is_file():
        from kalm_trainer.pipeline import run_recipe as run
        from kalm_trainer.recipe import load_recipe

        run(load_recipe(RECIPE, [f"run.output_dir={main_out}"]), until_step="data.mined")
    save_steps = max(steps // 3, 1)
    # variant-major: every finished variant already has its spread over seeds
    for index, (name, make_overrides) in enumerate(ablation_variants(work, main_out).items()):
        for seed in seeds:
            overrides = make_overrides()
            common = [
                f"run.seed={seed}",
                f"stage.finetune.max_steps={steps}",
                f"stage.finetune.save_steps={save_steps}",
                # a uniform soup of the run's 3 checkpoints (the recipe's weights are for its 5
                # checkpoints + the base model); "no soup" = the last checkpoint
                'soup.models=["@finetune:checkpoints"]',
                "soup.weights=[]",
            ]
            run = report.run_once(f"ablation s{seed} {name}", work / f"ablation-s{seed}-{index}",
                                  [*common, *overrides], from_step="finetune")  # fmt: skip
            report.eval_once(f"ablation s{seed} {name}", run["final_model"], max_length)
            if index == 0:
                report.eval_once(
                    f"ablation s{seed} no soup (last checkpoint)", run["stage_model"], max_length
                )
            shutil.rmtree(work / f"ablation-s{seed}-{index}" / "checkpoints", ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "kalm-bench-train-multilingual"
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["baseline", "main", "ablation"],
        choices=["baseline", "main", "ablation"],
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--ablation-steps", type=int, default=12, help="optimiser steps per ablation run")
    parser.add_argument(
        "--ablation-max-length", type=int, default=64, help="eval max length in the ablation (LeeSTS: 256)"
    )
    parser.add_argument(
        "--recipe", default="multilingual", help="recipe name or file (default: the shipped one)"
    )
    parser.add_argument(
        "--wait-for-main", action="store_true", help="ablation: wait for a main phase running elsewhere"
    )
    parser.add_argument("--render", action="store_true", help="only rewrite .md/.png from the .json files")
    args = parser.parse_args()
    global RECIPE
    RECIPE = args.recipe
    if args.render:
        _common.write_text_atomic(OUT.with_suffix(".md"), markdown(merged_results()))
        plots(merged_results())
        return 0
    report = Report(ABLATION_OUT if args.phases == ["ablation"] else OUT)
    if not (_common.DEV_DATA / TASKS[0]).is_dir():
        print(f"dev data not found under {_common.DEV_DATA}", file=sys.stderr)
        return 1
    report.data["machine"] = _common.machine_info()
    report.data["config"] = {k: str(v) for k, v in vars(args).items()}
    started = time.perf_counter()
    if "baseline" in args.phases:
        report.eval_once("e5 (before)", BASE_MODEL, EVAL_MAX_LENGTH)
    if "main" in args.phases:
        phase_main(report, args.work)
        plots(report.data)
    if "ablation" in args.phases:
        phase_ablation(
            report,
            args.work,
            args.seeds,
            args.ablation_steps,
            args.ablation_max_length,
            wait=args.wait_for_main,
        )
    report.data["timings_s"][f"total ({' + '.join(args.phases)})"] = round(time.perf_counter() - started, 1)
    report.save()
    plots(merged_results())
    print(markdown(merged_results()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
