"""Streaming data path: resident memory and examples/s from 10k to 10M training pairs.

The shared training pairs (/work/shared/data/train, 79k real pairs) are repeated to the size
asked for (each repetition's query gets a " #<n>" suffix, so queries stay unique) and written
as an examples JSONL. For every size a fresh child process then:

1. builds the on-disk index (``kalm_trainer.data.store``; line offsets, task ids, text hashes);
2. plans one epoch of semi-homogeneous task batches from the index (``store_sampler``);
3. reads ``--batches`` batches through a DataLoader with the trainer's collator (JSON parse,
   validation, prompts, tokenisation with the all-MiniLM-L6-v2 tokenizer) -> examples/s;
4. with ``--train-steps`` > 0, trains that many steps of a streaming stage (all-MiniLM-L6-v2)
   on the same file with ``train_stage``.

It records VmRSS (resident now) and VmHWM (peak) from /proc after each phase. The big file
is deleted at the end of each size (``--keep`` keeps it).

    python benchmarks/bench_streaming.py                          # 10k .. 10M, ~20 min here
    python benchmarks/bench_streaming.py --sizes 10000,100000 --batches 50

Results: benchmarks/results/streaming.json and streaming.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TRAIN = Path(os.environ.get("KALM_SHARED_DATA", REPO / ".." / "shared" / "data")) / "train"
RESULTS = REPO / "benchmarks" / "results"


def memory() -> dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) memory of this process, in MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)
    # RssFile: pages of memory-mapped files (the index, the plan) that the OS can drop at any
    # time; RssAnon: the process's own heap, which is what must not grow with the data
    return {
        "rss_mib": values.get("VmRSS", 0.0),
        "peak_mib": values.get("VmHWM", 0.0),
        "anon_mib": values.get("RssAnon", 0.0),
        "file_mib": values.get("RssFile", 0.0),
    }


def source_rows() -> list[dict[str, Any]]:
    rows = []
    for name in ("debian_pairs.jsonl", "gettext_pairs.jsonl", "manpage_pairs.jsonl"):
        with (TRAIN / name).open(encoding="utf-8") as handle:
            for line in handle:
                raw = json.loads(line)
                rows.append({"query": raw["query"], "positives": [raw["positive"]],
                             "task": raw.get("task", name.split("_")[0])})  # fmt: skip
    return rows


def write_pairs(path: Path, count: int) -> float:
    """``count`` example lines from the shared pairs by repetition; returns GB written."""
    rows = source_rows()
    # each line split after the query's text, so a repetition only splices in " #<n>"
    heads, tails = [], []
    for row in rows:
        query = json.dumps(row["query"], ensure_ascii=False)
        rest = json.dumps({k: v for k, v in row.items() if k != "query"}, ensure_ascii=False)
        heads.append('{"query": ' + query[:-1])
        tails.append('", ' + rest[1:] + "\n")
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            rep, i = divmod(n, len(rows))
            out.write(heads[i] + (f" #{rep}" if rep else "") + tails[i])
    return path.stat().st_size / 1e9


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    from kalm_trainer.collate import EmbeddingCollator
    from kalm_trainer.data.store import IndexedExamples, open_index
    from kalm_trainer.data.store_sampler import IndexedBatchSampler
    from kalm_trainer.model import EmbeddingModel

    from kalm_rag.resolve import resolve_model

    file = Path(args.child)
    work = file.parent
    report: dict[str, Any] = {"start": memory()}
    started = time.perf_counter()
    index = open_index([file], work / "ckpt.index")  # where train_stage looks for it: built once
    report["index"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "examples": index.count,
        **memory(),
    }
    started = time.perf_counter()
    sampler = IndexedBatchSampler(index, batch_size=args.batch_size, ratio=1.0, seed=0)
    batches = len(sampler)
    report["plan"] = {"seconds": round(time.perf_counter() - started, 2), "batches": batches, **sampler.stats,
                      **memory()}  # fmt: skip
    resolved = resolve_model("all-MiniLM-L6-v2")
    model = EmbeddingModel.from_pretrained(resolved.folder)
    collator = EmbeddingCollator(
        model.tokenizer, model.model_config, query_max_length=64, passage_max_length=128
    )
    loader = DataLoader(IndexedExamples(index), batch_sampler=sampler, collate_fn=collator, num_workers=0)
    started, seen = time.perf_counter(), 0
    for step, batch in enumerate(loader):
        seen += batch["query"]["input_ids"].shape[0]
        if step + 1 >= args.batches:
            break
    seconds = time.perf_counter() - started
    report["read"] = {"batches": args.batches, "examples": seen, "examples_per_s": round(seen / seconds, 1),
                      **memory()}  # fmt: skip
    if args.train_steps > 0:
        from kalm_trainer.recipe_schema import ModelSection, StageSection
        from kalm_trainer.stages import train_stage

        stage = StageSection(
            data=(str(file),),
            batch_size=args.batch_size,
            max_steps=args.train_steps,
            learning_rate=1e-5,
            save_steps=0,
            save_total_limit=1,
            streaming=True,
            precision="fp32",
            query_max_length=32,
            passage_max_length=64,
            matryoshka=False,
            logging_steps=args.train_steps,
        )
        started = time.perf_counter()
        result = train_stage(
            stage,
            model_section=ModelSection(base="all-MiniLM-L6-v2"),
            init="all-MiniLM-L6-v2",
            data_files=[file],
            checkpoint_dir=work / "ckpt",
            seed=0,
            identity={},
        )
        seconds = time.perf_counter() - started
        report["train"] = {"steps": result.stats["steps"], "seconds": round(seconds, 1),
                           "final_loss": result.stats["final_loss"], **memory()}  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "streaming"))
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("REPORT " + json.dumps(child(args)))
        return
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(dir=args.workdir or None, prefix="kalm-stream-") as tmp:
            file = Path(tmp) / "pairs.jsonl"
            started = time.perf_counter()
            gigabytes = write_pairs(file, size)
            written = round(time.perf_counter() - started, 1)
            command = [sys.executable, __file__, "--child", str(file), "--batches", str(args.batches)]
            command += ["--batch-size", str(args.batch_size), "--train-steps", str(args.train_steps)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            line = next((x for x in done.stdout.splitlines() if x.startswith("REPORT ")), None)
            if line is None:
                raise SystemExit(f"size {size} failed:\n{done.stderr[-3000:]}")
            report = {
                "pairs": size,
                "file_gb": round(gigabytes, 2),
                "write_s": written,
                **json.loads(line[7:]),
            }
            results.append(report)
            print(json.dumps(report), flush=True)
            if args.keep:
                os.rename(file, Path(args.workdir or ".") / f"pairs_{size}.jsonl")
            write_reports(Path(args.out), results, args)  # after every size: partial runs count


def write_reports(out: Path, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    record = {"results": results, "args": vars(args), "cpus": os.cpu_count(), "load_average_1m": load}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Streaming data path: memory and throughput by dataset size",
        "",
        "Generated by benchmarks/bench_streaming.py (shared training pairs repeated to each size).",
        "MiB of resident memory of the process after each phase; peak = VmHWM so far. Where",
        "recorded, anon = RssAnon (the process's own heap) and file = RssFile (pages of the",
        "memory-mapped index and plan, which the OS drops when it needs the memory).",
        "",
        "| pairs | file GB | index s | plan s | RSS after index | RSS after plan | RSS after reading"
        " | examples/s (read+collate) | RSS after training (anon / file) | peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        train = r.get("train", {})
        split = f" ({train['anon_mib']} / {train['file_mib']})" if "anon_mib" in train else ""
        lines.append(
            f"| {r['pairs']:,} | {r['file_gb']} | {r['index']['seconds']} | {r['plan']['seconds']} | "
            f"{r['index']['rss_mib']} | {r['plan']['rss_mib']} | {r['read']['rss_mib']} | "
            f"{r['read']['examples_per_s']} | {train.get('rss_mib', '-')}{split} | "
            f"{train.get('peak_mib', r['read']['peak_mib'])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
