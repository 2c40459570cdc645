"""Encoding speed: kalm_rag Encoder vs sentence-transformers ``encode``, same model and texts.

    python benchmarks/bench_encode.py                                   # MiniLM, fp32 (+bf16 if fast)
    python benchmarks/bench_encode.py --models all-MiniLM-L6-v2 multilingual-e5-small \\
        --dtypes float32 bfloat16 --n 500 --rounds 5

Both encoders run in one process with the same threads, batch size, max length and texts, and
are measured interleaved (the order alternates every round), because shared machines are
noisy: we report medians over rounds and the median of the per-round speedups. Each run records
wall-clock and process CPU time; CPU time is steadier when other jobs compete for the cores.
Cosine agreement compares the two encoders' vectors text by text. "% of peak" divides the
model's useful FLOPs (no padding) per CPU-second by a measured matmul's FLOPs per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common
import numpy as np

# Threads sleep instead of spinning between parallel regions: on a shared machine spinning steals
# cores from the other jobs (and from our other thread), and it would inflate CPU-time numbers.
# Set before torch loads OpenMP; it applies to both encoders alike and is recorded in the results.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TEXT_SETS = {
    # name -> (file under the dev data, what it is)
    "debian-docs-en": ("DebianDescRetrieval/corpus.jsonl", "English package descriptions (long)"),
    "debian-queries-multi": ("DebianDescRetrieval/queries.jsonl", "short descriptions in 12 languages"),
    "manpages-en": ("ManPageRetrieval/corpus.jsonl", "English man-page sections (up to 300 words)"),
}


def load_texts(name: str, n: int, seed: int) -> list[str]:
    path = Path(name) if Path(name).is_file() else _common.DEV_DATA / TEXT_SETS[name][0]
    with path.open(encoding="utf-8") as f:
        texts = [str(json.loads(line)["text"]) for line in f if line.strip()]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def matmul_peak(dtype: Any, size: int = 1024, repeats: int = 5) -> float:
    """Best FLOPs per CPU-second of a square matmul in ``dtype`` (the attainable peak)."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = max(best, 2 * size**3 / max(time.process_time() - start, 1e-9))
    return best


def model_flops(encoder: Any, lengths: Sequence[int]) -> float:
    """Useful forward FLOPs: 2 x linear weights per token + 4 x L^2 x hidden per layer (attention)."""
    import torch

    linear = sum(
        m.weight.numel()
        for name, m in encoder.model.named_modules()
        if isinstance(m, torch.nn.Linear) and "pooler" not in name
    )
    cfg = encoder.model.config
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * sum(n * n for n in lengths)
    return float(2 * linear * sum(lengths) + attention)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench_case(
    model: str, dtype: str, texts: list[str], args: argparse.Namespace, reference: Any
) -> dict[str, Any]:
    """One (model, dtype, text set): interleaved rounds of both encoders."""
    import torch
    from sentence_transformers import SentenceTransformer

    from kalm_rag import Encoder

    ours = Encoder.from_pretrained(model, dtype=dtype, num_threads=args.threads)
    st = SentenceTransformer(str(ours.source_folder), device=str(ours.device))
    st.to(getattr(torch, dtype))
    st.max_seq_length = ours.max_length
    lengths = [
        len(ids) for ids in ours.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]
    ]
    runners = {
        "kalm_rag": lambda: ours.encode(texts, batch_size=args.batch_size),
        "sentence-transformers": lambda: np.asarray(
            st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True), dtype=np.float32
        ),
    }
    # warm-up: first calls allocate buffers and pick kernels
    ours.encode(texts[: 2 * args.batch_size], batch_size=args.batch_size)
    st.encode(texts[: 2 * args.batch_size], batch_size=args.batch_size)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    outputs: dict[str, Any] = {}
    for round_no in range(args.rounds):
        order = list(runners) if round_no % 2 == 0 else list(reversed(runners))
        for name in order:
            outputs[name], wall, cpu = timed(runners[name])
            times[name].append((wall, cpu))
    a, b = outputs["kalm_rag"], outputs["sentence-transformers"]
    cos = (a * b).sum(axis=1)
    flops = model_flops(ours, lengths)
    peak = matmul_peak(getattr(torch, dtype))
    result: dict[str, Any] = {
        "model": model, "dtype": dtype, "n_texts": len(texts), "tokens": int(sum(lengths)),
        "mean_tokens": round(statistics.fmean(lengths), 1), "rounds": args.rounds,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "cosine_vs_st": {"min": float(cos.min()), "mean": float(cos.mean())},
        "matmul_peak_gflops_per_cpu_s": round(peak / 1e9, 1), "model_gflops": round(flops / 1e9, 2),
    }  # fmt: skip
    if reference is not None:  # low precision: how far each encoder moved from float32
        for name, vectors in (("kalm_rag", a), ("sentence-transformers", b)):
            ref_cos = (vectors * reference).sum(axis=1) / np.linalg.norm(vectors, axis=1)
            result.setdefault("cosine_vs_st_float32", {})[name] = {
                "min": float(ref_cos.min()), "mean": float(ref_cos.mean())}  # fmt: skip
    for name, samples in times.items():
        walls, cpus = [w for w, _ in samples], [c for _, c in samples]
        result[name] = {
            "wall_s": [round(w, 3) for w in walls], "cpu_s": [round(c, 3) for c in cpus],
            "sentences_per_s": round(len(texts) / statistics.median(walls), 1),
            "tokens_per_s": round(sum(lengths) / statistics.median(walls), 1),
            "percent_of_peak": round(100 * flops / statistics.median(cpus) / peak, 1),
        }  # fmt: skip
    pairs = zip(times["sentence-transformers"], times["kalm_rag"], strict=True)
    ratios = [(st_w / our_w, st_c / our_c) for (st_w, st_c), (our_w, our_c) in pairs]
    result["speedup_wall"] = round(statistics.median(r[0] for r in ratios), 3)
    result["speedup_cpu"] = round(statistics.median(r[1] for r in ratios), 3)
    result["reference_output"] = b if dtype == "float32" else None
    return result


def report(results: list[dict[str, Any]], machine: dict[str, Any], out: Path) -> str:
    headers = ["model", "dtype", "texts", "n", "mean tok", "ST sent/s", "ours sent/s", "ST tok/s",
               "ours tok/s", "speedup wall", "speedup CPU", "cos min", "%peak ST", "%peak ours"]  # fmt: skip
    rows = [
        [r["model"], r["dtype"], r["texts"], r["n_texts"], r["mean_tokens"],
         r["sentence-transformers"]["sentences_per_s"], r["kalm_rag"]["sentences_per_s"],
         r["sentence-transformers"]["tokens_per_s"], r["kalm_rag"]["tokens_per_s"],
         f"{r['speedup_wall']:.2f}x", f"{r['speedup_cpu']:.2f}x", f"{r['cosine_vs_st']['min']:.6f}",
         r["sentence-transformers"]["percent_of_peak"], r["kalm_rag"]["percent_of_peak"]]
        for r in results
    ]  # fmt: skip
    bf16 = [r for r in results if "cosine_vs_st_float32" in r]
    text = "\n".join([
        "# Encoding speed: kalm_rag Encoder vs sentence-transformers",
        "",
        f"Command: `{machine['command']}`",
        "",
        "Same model, texts, batch size, max length and threads; the two encoders alternate within "
        "each round. Throughput uses median wall-clock over rounds; speedups are medians of per-round "
        "ratios (wall clock and process CPU time). `% peak` = useful model FLOPs (no padding) per "
        "CPU-second / FLOPs per CPU-second of a 1024x1024 matmul in the same dtype.",
        "",
        _common.markdown_table(headers, rows),
        "",
        *(_low_precision_table(bf16) if bf16 else []),
        "![speed](encode.png)",
        "",
        "## Machine",
        "",
        _common.machine_summary(machine),
        "",
    ])  # fmt: skip
    _common.write_text_atomic(out / "encode.md", text)
    return _common.text_table(headers, rows)


def _low_precision_table(results: list[dict[str, Any]]) -> list[str]:
    headers = [
        "model",
        "dtype",
        "texts",
        "kalm_rag cos min",
        "kalm_rag cos mean",
        "ST cos min",
        "ST cos mean",
    ]
    rows = []
    for r in results:
        ours, st = r["cosine_vs_st_float32"]["kalm_rag"], r["cosine_vs_st_float32"]["sentence-transformers"]
        rows.append([r["model"], r["dtype"], r["texts"], f"{ours['min']:.6f}", f"{ours['mean']:.6f}",
                     f"{st['min']:.6f}", f"{st['mean']:.6f}"])  # fmt: skip
    return [
        "Low precision vs the float32 vectors of sentence-transformers (cosine, per text; ST's "
        "bf16 vectors are re-normalised first, since it normalises in bf16):",
        "",
        _common.markdown_table(headers, rows),
        "",
    ]


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Two panels: throughput per CPU-second (steady under contention) and per wall-clock second."""
    plt = _common.pyplot()
    labels = [f"{r['model']}\n{r['dtype']}\n{r['texts']}" for r in results]
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 1.5 * len(results)), 8.0))
    xs = np.arange(len(results))
    panels = (("cpu_s", "speedup_cpu", "sentences per CPU-second (median)"),
              ("wall_s", "speedup_wall", "sentences / s, wall clock (median)"))  # fmt: skip
    for ax, (times, speedup, title) in zip(axes, panels, strict=True):
        for offset, name in ((-0.2, "sentence-transformers"), (0.2, "kalm_rag")):
            rates = [r["n_texts"] / statistics.median(r[name][times]) for r in results]
            ax.bar(xs + offset, rates, 0.4, label=name)
            if name == "kalm_rag":
                for x, r, height in zip(xs, results, rates, strict=True):
                    ax.annotate(
                        f"{r[speedup]:.2f}x", (x + offset, height), ha="center", va="bottom", fontsize=8
                    )
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "Encoding throughput, same model and texts (labels: median of per-round speedups)", fontsize=10
    )
    fig.tight_layout()
    _common.save_figure(fig, path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2"])
    sets = ", ".join(TEXT_SETS)
    parser.add_argument("--texts", nargs="+", default=["debian-docs-en", "debian-queries-multi"],
                        help=f"text sets ({sets}) or .jsonl files with a 'text' field")  # fmt: skip
    parser.add_argument("--n", type=int, default=200, help="texts per set")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtypes", nargs="+", default=["auto"],
                        help="float32, bfloat16; auto adds bfloat16 where it is fast (AMX, GPU)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: available cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-json", type=Path, help="re-render the report and plot of a saved encode.json")
    parser.add_argument(
        "--out", type=Path, default=_common.RESULTS_DIR, help="folder for encode.json/.md/.png"
    )
    return parser.parse_args(argv)


def pick_dtypes(requested: Sequence[str]) -> list[str]:
    if list(requested) != ["auto"]:
        # float32 first: the bf16 runs are also compared with its vectors
        return sorted(dict.fromkeys(requested), key=lambda d: d != "float32")
    import torch

    from kalm_rag.runtime import cpu_has_fast_bf16

    return ["float32", "bfloat16"] if torch.cuda.is_available() or cpu_has_fast_bf16() else ["float32"]


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    if "--backends" in (argv if argv is not None else sys.argv[1:]):  # the backend comparison
        import bench_encode_backends

        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--backends"]
        return bench_encode_backends.main(rest)
    args = parse_args(argv)
    if args.from_json:  # no measuring: only the Markdown report and the plot from saved numbers
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        plot(saved["results"], args.out / "encode.png")
        print(report(saved["results"], saved["machine"], args.out))
        return 0
    dtypes = pick_dtypes(args.dtypes)
    results = []
    load_before = _common.machine_info()["load_average_1_5_15"]
    for model in args.models:
        for text_set in args.texts:
            texts = load_texts(text_set, args.n, args.seed)
            reference = None
            for dtype in dtypes:
                result = bench_case(model, dtype, texts, args, reference)
                reference = result.pop("reference_output") if dtype == "float32" else reference
                result.pop("reference_output", None)
                result["texts"] = Path(text_set).stem if Path(text_set).is_file() else text_set
                results.append(result)
                summary = (
                    f"{model} {dtype} {result['texts']}: speedup {result['speedup_wall']:.2f}x wall, "
                    f"{result['speedup_cpu']:.2f}x CPU, cos min {result['cosine_vs_st']['min']:.6f}"
                )
                print(summary, flush=True)
    machine = _common.machine_info()
    machine["load_average_before"] = load_before
    args.out.mkdir(parents=True, exist_ok=True)
    _common.write_json(
        args.out / "encode.json", {"benchmark": "encode", "results": results, "machine": machine}
    )
    plot(results, args.out / "encode.png")
    print(report(results, machine, args.out))
    print(f"\nwrote {args.out}/encode.json, encode.md, encode.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
