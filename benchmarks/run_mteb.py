"""Run ``mteb.evaluate`` with kalm_rag encoders on local tasks, BEIR folders or official tasks.

    python benchmarks/run_mteb.py                                 # dev tasks, packaged MiniLM
    python benchmarks/run_mteb.py --models multilingual-e5-small --tasks LeeSTS GettextBitextMining
    python benchmarks/run_mteb.py --tasks /data/beir/scifact      # any BEIR-layout folder
    python benchmarks/run_mteb.py --tasks NFCorpus STS12           # official mteb tasks (needs a network)

A task argument is, in order: an existing path (a task folder in BEIR / bitext / STS layout, or a
folder of them), a folder name under ``--tasks-dir``, or an official mteb task name. Results go
to ``--out``: mteb's own result files under ``mteb/results/<model>/<revision>/`` plus a summary
``mteb.json`` and ``mteb.md`` with the main score per task and subset.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common


def resolve_tasks(specs: Sequence[str], tasks_dir: Path, language: str) -> list[Any]:
    import mteb

    from kalm_rag.eval.datasets import discover_tasks
    from kalm_rag.eval.mteb_tasks import local_task

    tasks: list[Any] = []
    official: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if not path.exists() and tasks_dir.is_dir() and (tasks_dir / spec).is_dir():
            path = tasks_dir / spec
        if path.exists():
            tasks += [local_task(folder, language=language) for folder in discover_tasks(path)]
        else:
            official.append(spec)
    if official:
        tasks += list(mteb.get_tasks(tasks=official))
    return tasks


def summarize(result: Any, model_name: str, revision: str | None) -> list[dict[str, Any]]:
    rows = []
    for task_result in result.task_results:
        for split, scores in task_result.scores.items():
            for score in scores:
                rows.append({"model": model_name, "revision": revision, "task": task_result.task_name,
                             "split": split, "subset": score["hf_subset"],
                             "main_score": round(float(score["main_score"]), 4)})  # fmt: skip
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per task: the main score per subset, one bar per model."""
    plt = _common.pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9.0, 2.6 * len(tasks)), squeeze=False)
    width = 0.8 / len(models)
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        subsets = list(dict.fromkeys(r["subset"] for r in rows if r["task"] == task))
        score = {(r["model"], r["subset"]): r["main_score"] for r in rows if r["task"] == task}
        for i, model in enumerate(models):
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(subsets))]
            ax.bar(xs, [score.get((model, s), 0.0) for s in subsets], width, label=model)
        ax.set_xticks(range(len(subsets)), subsets, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(task, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    _common.save_figure(fig, path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2"], help="alias, folder or hub id")
    parser.add_argument(
        "--tasks", nargs="*", help="task folders, folder names under --tasks-dir, or mteb names"
    )
    parser.add_argument("--tasks-dir", type=Path, default=_common.DEV_DATA)
    parser.add_argument(
        "--language", default="eng-Latn", help="mteb language code of single-language folders"
    )
    parser.add_argument(
        "--max-length", type=int, default=256, help="max tokens per text (0: the model's own)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--instruction", action="append", default=[], metavar="TASK=TEXT",
                        help="instruction for one task (instruction-aware models), repeatable")  # fmt: skip
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR, help="folder for mteb.* files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import datasets
    import mteb

    from kalm_rag.mteb_adapter import KalmMtebEncoder

    datasets.disable_progress_bars()
    instructions = dict(item.split("=", 1) for item in args.instruction)
    tasks = resolve_tasks(args.tasks or [str(args.tasks_dir)], args.tasks_dir, args.language)
    cache = mteb.ResultCache(cache_path=args.out / "mteb")
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for spec in args.models:
        overrides = {"max_length": args.max_length} if args.max_length else {}
        model = KalmMtebEncoder.from_pretrained(
            spec, instructions=instructions, batch_size=args.batch_size, dtype=args.dtype, **overrides
        )
        meta = model.mteb_model_meta
        start = time.perf_counter()
        result = mteb.evaluate(
            model, tasks, cache=cache, overwrite_strategy="always", show_progress_bar=False
        )
        seconds[meta.name] = round(time.perf_counter() - start, 1)
        rows += summarize(result, meta.name, meta.revision)
    headers = ["model", "task", "subset", "main score"]
    table = [[r["model"], r["task"], r["subset"], r["main_score"]] for r in rows]
    print(_common.text_table(headers, table))
    machine = _common.machine_info()
    payload = {"benchmark": "mteb", "max_length": args.max_length, "seconds_per_model": seconds}
    _common.write_json(args.out / "mteb.json", {**payload, "rows": rows, "machine": machine})
    report = [
        "# MTEB runs (kalm_rag adapter)",
        "",
        f"Command: `{machine['command']}`",
        "",
        "Main score per task and subset as computed by `mteb.evaluate` (nDCG@10 for retrieval, "
        "accuracy for bitext mining, cosine Spearman for STS). mteb's full result files are under "
        "`mteb/results/<model>/<revision>/`.",
        "",
        _common.markdown_table(headers, table),
        "",
        "![mteb](mteb.png)",
        "",
        "Seconds per model: " + ", ".join(f"{k} {v}" for k, v in seconds.items()),
        "",
        "## Machine",
        "",
        _common.machine_summary(machine),
        "",
    ]
    _common.write_text_atomic(args.out / "mteb.md", "\n".join(report))
    plot(rows, args.out / "mteb.png")
    print(
        f"\nwrote {args.out}/mteb.json, mteb.md and mteb result files under {args.out}/mteb", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
