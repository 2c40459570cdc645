"""Retrieval quality of any encoders (plus BM25) on every task in a folder, per language.

    python benchmarks/bench_retrieval.py                       # dev tasks, MiniLM + e5 + BM25
    python benchmarks/bench_retrieval.py --models all-MiniLM-L6-v2 /path/to/trained bm25 \\
        --tasks-dir /data/beir --out /tmp/quality

Tasks are folders in the layouts of ``kalm_rag.eval.datasets`` (BEIR retrieval with optional
``qrels/test_<lang>.tsv`` per language, bitext pairs, STS pairs). Metrics come from libraries:
nDCG@10 / Recall@100 / MRR@10 and bitext accuracy from trec_eval (pytrec_eval), Spearman from
scipy. ``bm25`` is kalm_rag's BM25Index (k1=1.5, b=0.75); on STS its row is TF-IDF cosine (BM25
scores are not a pair similarity). Prints one table per task and writes JSON, Markdown and a
bar chart per task.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

from kalm_rag.beir import load_retrieval_task, read_qrels
from kalm_rag.eval.datasets import ALL_LANGUAGES, load_bitext_task, load_sts_task, retrieval_splits, task_kind
from kalm_rag.eval.metrics import (
    RETRIEVAL_METRICS,
    bitext_accuracy,
    bitext_accuracy_from_run,
    retrieval_metrics,
    spearman,
    top_k_run,
)
from kalm_rag.eval.scoring import bm25_run, dense_pair_scores, dense_scores, tfidf_pair_scores

MAIN_METRIC = {"retrieval": "ndcg@10", "bitext": "accuracy", "sts": "spearman"}
BM25 = "bm25"
DEFAULT_MODELS = ("all-MiniLM-L6-v2", "multilingual-e5-small", BM25)
OTHER_LANGUAGES = "non-en mean"


@dataclass
class System:
    """A model under test: an Encoder, or BM25 when ``encoder`` is None."""

    name: str
    encoder: Any = None
    batch_size: int = 32

    @property
    def is_lexical(self) -> bool:
        return self.encoder is None


def load_system(spec: str, *, max_length: int | None, dtype: str, batch_size: int) -> System:
    if spec.lower() == BM25:
        return System("BM25")
    from kalm_rag import Encoder

    overrides = {"max_length": max_length} if max_length else {}
    encoder = Encoder.from_pretrained(spec, dtype=dtype, **overrides)
    return System(Path(spec).name if Path(spec).is_dir() else spec, encoder, batch_size)


# -- one task, one system -> records ---------------------------------------------------------------
def evaluate_retrieval(system: System, folder: Path) -> list[dict[str, Any]]:
    task = load_retrieval_task(folder, split="test")
    doc_ids, query_ids = list(task.corpus), list(task.queries)
    docs, queries = [task.corpus[d] for d in doc_ids], [task.queries[q] for q in query_ids]
    if system.is_lexical:
        run = bm25_run(query_ids, queries, doc_ids, docs, k=100)
    else:
        scores = dense_scores(system.encoder, queries, docs, batch_size=system.batch_size)
        run = top_k_run(scores, query_ids, doc_ids, k=100)
    records = []
    for language, split in retrieval_splits(folder).items():
        qrels = task.qrels if language == ALL_LANGUAGES else read_qrels(folder / "qrels" / f"{split}.tsv")
        values = retrieval_metrics(qrels, run)
        records += [
            _record(system, folder, "retrieval", language, m, values[m], len(qrels))
            for m in RETRIEVAL_METRICS
        ]
    return records


def evaluate_bitext(system: System, folder: Path) -> list[dict[str, Any]]:
    records = []
    for pair in load_bitext_task(folder):
        n = len(pair.sentences1)
        if system.is_lexical:
            ids = [str(i) for i in range(n)]
            accuracy = bitext_accuracy_from_run(bm25_run(ids, pair.sentences1, ids, pair.sentences2, k=1), n)
        else:
            from kalm_rag.eval.scoring import encode_side

            left = encode_side(
                system.encoder, pair.sentences1, side="query", task="bitext", batch_size=system.batch_size
            )
            right = encode_side(
                system.encoder, pair.sentences2, side="document", task="bitext", batch_size=system.batch_size
            )
            accuracy = bitext_accuracy(system.encoder.similarity(left, right))
        records.append(_record(system, folder, "bitext", pair.name, "accuracy", accuracy, n))
    return records


def evaluate_sts(system: System, folder: Path) -> list[dict[str, Any]]:
    pairs = load_sts_task(folder)
    if system.is_lexical:
        predicted = tfidf_pair_scores(pairs.sentences1, pairs.sentences2)
    else:
        predicted = dense_pair_scores(
            system.encoder, pairs.sentences1, pairs.sentences2, batch_size=system.batch_size
        )
    return [
        _record(
            system,
            folder,
            "sts",
            ALL_LANGUAGES,
            "spearman",
            spearman(predicted, pairs.scores),
            len(pairs.scores),
        )
    ]


EVALUATORS = {"retrieval": evaluate_retrieval, "bitext": evaluate_bitext, "sts": evaluate_sts}


def _record(
    system: System, folder: Path, kind: str, language: str, metric: str, value: float, n: int
) -> dict[str, Any]:
    return {"model": system.name, "task": folder.name, "kind": kind, "language": language,
            "metric": metric, "value": round(float(value), 4), "n": n}  # fmt: skip


# -- summaries -------------------------------------------------------------------------------------
def with_summaries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add a mean over non-English query languages (retrieval) and over pairs (bitext)."""
    out = list(records)
    keys = {(r["model"], r["task"], r["kind"], r["metric"]) for r in records}
    for model, task, kind, metric in sorted(keys):
        rows = [
            r
            for r in records
            if (r["model"], r["task"], r["kind"], r["metric"]) == (model, task, kind, metric)
        ]
        if kind == "retrieval":
            others = [r for r in rows if r["language"] not in (ALL_LANGUAGES, "en")]
            if others and any(r["language"] == "en" for r in rows):
                mean = round(statistics.fmean(r["value"] for r in others), 4)
                out.append(
                    {**rows[0], "language": OTHER_LANGUAGES, "value": mean, "n": sum(r["n"] for r in others)}
                )
        elif kind == "bitext" and len(rows) > 1:
            mean = round(statistics.fmean(r["value"] for r in rows), 4)
            out.append({**rows[0], "language": "mean", "value": mean, "n": sum(r["n"] for r in rows)})
    return out


def task_table(records: list[dict[str, Any]], task: str, metric: str) -> tuple[list[str], list[list[Any]]]:
    rows = [r for r in records if r["task"] == task and r["metric"] == metric]
    languages = list(dict.fromkeys(r["language"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    value = {(r["model"], r["language"]): r["value"] for r in rows}
    table = [[m, *(value.get((m, lang), "") for lang in languages)] for m in models]
    return ["model", *languages], table


def plot_task(records: list[dict[str, Any]], task: str, metric: str, path: Path) -> None:
    plt = _common.pyplot()
    rows = [r for r in records if r["task"] == task and r["metric"] == metric]
    languages = list(dict.fromkeys(r["language"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    value = {(r["model"], r["language"]): r["value"] for r in rows}
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(languages) * max(len(models), 2) / 2 + 2), 3.8))
    for i, model in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(languages))]
        ax.bar(xs, [value.get((model, lang), 0.0) for lang in languages], width, label=model)
    ax.set_xticks(range(len(languages)), languages, rotation=45 if len(languages) > 6 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} per language")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    _common.save_figure(fig, path)
    plt.close(fig)


def write_report(records: list[dict[str, Any]], payload: dict[str, Any], out: Path) -> str:
    tasks = list(dict.fromkeys(r["task"] for r in records))
    parts = [
        "# Retrieval quality benchmark",
        "",
        f"Command: `{payload['machine']['command']}`",
        "",
        "Main metric per task: nDCG@10 (retrieval), accuracy (bitext mining, nearest neighbour from "
        "sentences1 into sentences2), Spearman (STS). Metrics computed by trec_eval (pytrec_eval) and scipy. "
        f"`{OTHER_LANGUAGES}` averages the non-English query languages; `all` pools every query. "
        "BM25 is kalm_rag's BM25Index (k1=1.5, b=0.75); its STS value is TF-IDF cosine. "
        f"Max sequence length {payload['max_length']} tokens.",
        "",
    ]
    for task in tasks:
        kind = next(r["kind"] for r in records if r["task"] == task)
        metrics = RETRIEVAL_METRICS if kind == "retrieval" else (MAIN_METRIC[kind],)
        parts += [f"## {task} ({kind})", "", f"![{task}](retrieval_{task}.png)", ""]
        for metric in metrics:
            headers, table = task_table(records, task, metric)
            parts += [f"**{metric}**", "", _common.markdown_table(headers, table), ""]
    timing = [[m, f"{s:.1f}"] for m, s in payload["seconds_per_model"].items()]
    parts += [
        "## Time per model (all tasks, wall clock)",
        "",
        _common.markdown_table(["model", "seconds"], timing),
        "",
    ]
    parts += ["## Machine", "", _common.machine_summary(payload["machine"]), ""]
    text = "\n".join(parts)
    _common.write_text_atomic(out / "retrieval.md", text)
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="encoders (alias, folder or hub id) and/or 'bm25'")  # fmt: skip
    parser.add_argument(
        "--tasks-dir", type=Path, default=_common.DEV_DATA, help="a task folder or a folder of them"
    )
    parser.add_argument("--tasks", nargs="*", help="only these task folder names")
    parser.add_argument(
        "--max-length", type=int, default=256, help="max tokens per text (0: the model's own)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR, help="folder for retrieval.* files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from kalm_rag.eval.datasets import discover_tasks

    folders = discover_tasks(args.tasks_dir)
    if args.tasks:
        folders = [f for f in folders if f.name in set(args.tasks)]
        if not folders:
            print(f"no task named {args.tasks} in {args.tasks_dir}", file=sys.stderr)
            return 2
    records: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for spec in args.models:
        system = load_system(
            spec, max_length=args.max_length or None, dtype=args.dtype, batch_size=args.batch_size
        )
        start = time.perf_counter()
        for folder in folders:
            task_start = time.perf_counter()
            records += EVALUATORS[task_kind(folder)](system, folder)
            print(
                f"{system.name} on {folder.name}: {time.perf_counter() - task_start:.1f} s", file=sys.stderr
            )
        seconds[system.name] = time.perf_counter() - start
    records = with_summaries(records)
    payload = {
        "benchmark": "retrieval",
        "max_length": args.max_length,
        "tasks_dir": str(args.tasks_dir),
        "seconds_per_model": seconds,
        "records": records,
        "machine": _common.machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _common.write_json(args.out / "retrieval.json", payload)
    for folder in folders:
        kind = task_kind(folder)
        plot_task(records, folder.name, MAIN_METRIC[kind], args.out / f"retrieval_{folder.name}.png")
        headers, table = task_table(records, folder.name, MAIN_METRIC[kind])
        print(f"\n{folder.name} ({kind}, {MAIN_METRIC[kind]})\n{_common.text_table(headers, table)}")
    write_report(records, payload, args.out)
    print(f"\nwrote {args.out}/retrieval.json, retrieval.md and retrieval_<task>.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
