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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/OpenMP start: see DESIGN.md

RECIPE = "multilingual"
BASE_MODEL = "multilingual-e5-small"
TASKS = ("DebianDescRetrieval", "ManPageRetrieval", "GettextBitextMining", "LeeSTS")
EVAL_MAX_LENGTH = 256  # as the dev baselines in shared/data/dev/README.md
OUT = _common.RESULTS_DIR / "train_multilingual.json"
#: the ablation has its own file, so that it can run while the main phase runs in another process
ABLATION_OUT = _common.RESULTS_DIR / "train_multilingual_ablation.json"

#: the issue's targets on the dev sets: (summary key, label, e5 value quoted by the issue, target)
TARGETS = (
    ("debian_en", "DebianDesc en nDCG@10", 0.932, None),
    ("debian_non_en", "DebianDesc non-en mean nDCG@10", 0.733, 0.83),
    ("manpage_en", "ManPage en nDCG@10", 0.905, None),
    ("manpage_non_en", "ManPage non-en mean nDCG@10", 0.655, 0.72),
    ("gettext", "Gettext bitext accuracy (12 pairs)", 0.933, 0.94),
    ("lee", "Lee STS Spearman", 0.432, 0.50),
)
SUMMARY_KEYS = tuple(t[0] for t in TARGETS)


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
AFTER = "multilingual (after, soup)"
LAST = "multilingual, last checkpoint (no soup)"
CHECKPOINT_SOUP = "multilingual, uniform soup of the checkpoints only (no base)"
MAIN_MODELS = ("e5 (before)", AFTER, CHECKPOINT_SOUP, LAST)


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


# -- rendering -----------------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


ABLATION_VARIANTS = (
    "reference (all on)",
    "no soup (last checkpoint)",
    "no multi-task mix (Debian pairs only)",
    "no hard negatives (in-batch only)",
    "no task batching (random batches)",
    "no focal (gamma 0)",
    "no hard-negative mixing",
    "no filtering",
)


def incomplete_note(rows: dict[str, dict[str, list[float]]], seeds: list[int]) -> list[str]:
    """Say which variants have fewer seeds than asked for (a run cut short by its time budget)."""
    short = [f"{v} ({len(rows.get(v, {}).get('lee', []))}/{len(seeds)} seeds)" for v in ABLATION_VARIANTS
             if len(rows.get(v, {}).get("lee", [])) < len(seeds)]  # fmt: skip
    return [f"**Not finished in this run:** {', '.join(short)}.", ""] if short else []


def data_lines(counts: dict[str, Any]) -> list[str]:
    """One line per data step: lines in, lines out, and where the rest went."""
    lines = []
    for name, stats in counts.items():
        text = f"- `{name}`: {stats.get('read', '?')} read, {stats.get('written', '?')} written"
        if "sampled_per_group" in stats:
            groups = ", ".join(f"{k} {v}" for k, v in stats["sampled_per_group"].items())
            text += f"; sampled per language: {groups}"
        if "dropped_per_task" in stats:
            dropped = {}
            for task, n in stats["dropped_per_task"].items():
                key = task.split("-bitext")[0] + ("-bitext" if "-bitext" in task else "")
                dropped[key] = dropped.get(key, 0) + n
            text += f"; dropped {stats.get('dropped')}: " + ", ".join(f"{k} {v}" for k, v in dropped.items())
        if "mined" in stats:
            text += f"; {stats['mined']} negatives mined, {stats.get('duplicated', 0)} duplicated to fill"
        lines.append(text)
    return lines


def ablation_rows(data: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """variant -> summary key -> one value per seed (in seed order)."""
    rows: dict[str, dict[str, list[float]]] = {}
    for key, result in data["evals"].items():
        if not key.startswith("ablation s"):
            continue
        variant = key.split(" ", 2)[2]
        for metric, value in result["summary"].items():
            rows.setdefault(variant, {}).setdefault(metric, []).append(value)
    return rows


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return fmt(values[0]) if values else "-"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def markdown(data: dict[str, Any]) -> str:
    evals = data["evals"]
    lines = ["# Multilingual multi-task fine-tuning on CPU (`multilingual` recipe)", ""]
    main = data.get("main", {})
    config = data.get("config", {})
    if main:
        counts = main["data"]
        lines += [
            "Recipe `multilingual` (`kalm-train run multilingual`) from multilingual-e5-small on seeded "
            "subsamples of the three files in shared/data/train; dev tasks of shared/data/dev at max length "
            f"{EVAL_MAX_LENGTH}, exact search. Wall time of the recipe: {main['wall_seconds'] / 60:.1f} min "
            f"on {data.get('machine', {}).get('cores_available', '?')} shared cores.",
            "",
            "Data steps (counts from the manifests):",
            "",
            *data_lines(counts),
            "",
        ]
    before, after = evals.get("e5 (before)"), evals.get(AFTER)
    last, checkpoints = evals.get(LAST), evals.get(CHECKPOINT_SOUP)
    if before:
        head = (
            "| group | e5 (before) | after (recipe's soup) | target | met "
            "| soup of checkpoints only | last checkpoint |"
        )
        lines += ["## Targets (dev)", "", head, "|---|---|---|---|---|---|---|"]
        for key, label, _quoted, target in TARGETS:
            b = before["summary"][key]
            a = after["summary"][key] if after else None
            c = last["summary"][key] if last else None
            k = checkpoints["summary"][key] if checkpoints else None
            goal = max(b, target) if target is not None else b
            met = "-" if a is None else ("yes" if a >= goal - 1e-9 else "**no**")
            lines.append(f"| {label} | {fmt(b)} | {fmt(a)} | >= {goal:.3f} | {met} | {fmt(k)} | {fmt(c)} |")
        lines += [
            "",
            "Target = the issue's number, or e5's own value where the issue asks for at least e5's. The "
            "recipe's soup averages the base model (weight 1/3) with the 5 checkpoints (2/15 each); the "
            "last two columns are the same run without the base model in the soup, and without a soup.",
            "",
        ]
        if after:
            below = [
                f"{task} {lang} ({fmt(after['scores'][task][lang])} < {fmt(value)})"
                for task in TASKS
                for lang, value in before["scores"][task].items()
                if after["scores"][task].get(lang, 1.0) < value
            ]
            lines += [f"Languages where the soup is below e5: {', '.join(below) or 'none'}.", ""]
        lines += []
        for task in TASKS:
            langs = list(before["scores"][task])
            lines += [f"### {task}", "", f"![{task}](train_multilingual_{task}.png)", "",
                      "| model | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]  # fmt: skip
            extra = [n for n in evals if n.startswith("multilingual") and n not in MAIN_MODELS]
            for name in [*MAIN_MODELS, *extra]:
                if name in evals:
                    row = evals[name]["scores"][task]
                    lines.append(f"| {name} | " + " | ".join(fmt(row.get(lang)) for lang in langs) + " |")
            lines.append("")
    rows = ablation_rows(data)
    if rows:
        ab = data["ablation_config"]
        ref = rows.get("reference (all on)", {})
        base = evals.get(f"e5 (before) @{ab['eval_max_length']}")
        lines += [
            f"## Ablation ({ab['steps']} steps per run, seeds {ab['seeds']}, eval at max length "
            f"{ab['eval_max_length']} tokens, LeeSTS {EVAL_MAX_LENGTH}; mean ± std over seeds)",
            "",
            "Shorter runs than the recipe's and a shorter eval length (the training length of passages), "
            "to fit the whole grid in the time budget on 2 shared cores: compare rows with each other, "
            "not with the main table. Every run trains from the main run's data steps (same sample, "
            "filtering and mining); the seed changes batch order, negative choice and mixing. Soups "
            "here are uniform over the run's 3 checkpoints (no base model); `no soup` is the last "
            "checkpoint of the reference runs. Δ = variant - reference, paired by seed (mean ± std).",
            "",
            *incomplete_note(rows, ab["seeds"]),
            "![ablation](train_multilingual_ablation.png)",
            "",
            "| variant | " + " | ".join(k for k in SUMMARY_KEYS) + " |",
            "|---|" + "---|" * len(SUMMARY_KEYS),
        ]
        if base:
            lines.append(
                "| e5 (before) | " + " | ".join(fmt(base["summary"][k]) for k in SUMMARY_KEYS) + " |"
            )
        for variant, metrics in rows.items():
            lines.append(
                f"| {variant} | " + " | ".join(mean_std(metrics.get(k, [])) for k in SUMMARY_KEYS) + " |"
            )
        lines += [
            "",
            "| Δ vs reference | " + " | ".join(SUMMARY_KEYS) + " |",
            "|---|" + "---|" * len(SUMMARY_KEYS),
        ]
        for variant, metrics in rows.items():
            if variant == "reference (all on)":
                continue
            cells = []
            for k in SUMMARY_KEYS:
                pairs = list(zip(metrics.get(k, []), ref.get(k, []), strict=False))
                cells.append(mean_std([a - b for a, b in pairs]) if pairs else "-")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    if data.get("timings_s"):
        lines += ["## Timings (wall seconds)", "", "| what | s |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in data["timings_s"].items()]
        lines.append("")
    if data.get("machine"):
        lines += ["## Machine", "", _common.machine_summary(data["machine"]), ""]
    if config:
        lines += [f"Command: `{data['machine'].get('command', '')}`", ""]
    return "\n".join(lines)


def plots(data: dict[str, Any]) -> None:
    plt = _common.pyplot()
    evals = data["evals"]
    names = [n for n in MAIN_MODELS if n in evals]
    for task in TASKS if names else ():
        langs = list(evals[names[0]]["scores"][task])
        fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(langs) + 2), 3.6))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(langs))]
            ax.bar(xs, [evals[name]["scores"][task].get(lang, 0.0) for lang in langs], width, label=name)
        ax.set_xticks(range(len(langs)), langs, rotation=45 if len(langs) > 6 else 0)
        low = min(min(evals[n]["scores"][task].values()) for n in names)
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.set_title(f"{task} (dev), before / after")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
        _common.save_figure(fig, _common.RESULTS_DIR / f"train_multilingual_{task}.png")
        plt.close(fig)
    rows = ablation_rows(data)
    ref = rows.get("reference (all on)")
    if rows and ref:
        variants = [v for v in rows if v != "reference (all on)"]
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(SUMMARY_KEYS)
        for i, key in enumerate(SUMMARY_KEYS):
            means, stds = [], []
            for variant in variants:
                deltas = [a - b for a, b in zip(rows[variant].get(key, []), ref.get(key, []), strict=False)]
                means.append(statistics.fmean(deltas) if deltas else 0.0)
                stds.append(statistics.stdev(deltas) if len(deltas) > 1 else 0.0)
            xs = [j + (i - (len(SUMMARY_KEYS) - 1) / 2) * width for j in range(len(variants))]
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=key)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(variants)), [v.split(" (")[0] for v in variants], rotation=30, ha="right")
        ax.set_ylabel("variant - reference")
        ax.set_title("Ablation: effect of turning each technique off (mean ± std over seeds)")
        ax.legend(fontsize=7, ncol=3)
        ax.grid(axis="y", alpha=0.3)
        _common.save_figure(fig, _common.RESULTS_DIR / "train_multilingual_ablation.png")
        plt.close(fig)


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
