"""Encoding backends side by side: sentence-transformers vs kalm_rag's torch/OpenVINO/ONNX variants.

    python benchmarks/bench_encode.py --backends                       # = this script's defaults
    python benchmarks/bench_encode_backends.py --models all-MiniLM-L6-v2 multilingual-e5-small \\
        --threads 1 2 --n-docs 300 --n-queries 300 --rounds 3

One process, one set of texts, every variant measured interleaved (the order rotates every
round): sentence-transformers' ``encode`` in float32; sentence-transformers running our exported
OpenVINO / ONNX float32 model in place of its torch model (what its ``backend="openvino"`` /
``"onnx"`` runs; optimum-intel and optimum-onnx, which it needs for that, cannot be installed
beside transformers 5); ours: torch float32 (and bf16 on CPUs with fast bf16), OpenVINO float32
(bf16) and int8, ONNX Runtime float32 and int8. Texts are the dev DebianDesc task: English
package descriptions (documents) and short multilingual queries whose relevant document is among
them, so the same vectors give retrieval nDCG@10 (on that sub-corpus). Quality is measured
against our torch float32 vectors: per-text cosine and top-10 agreement of the query->document
rankings. "% peak" = useful model FLOPs (no padding) per CPU-second / a large matmul's FLOPs per
CPU-second in that precision (int8 against the float32 peak: no int8 matmul is timed).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common
import numpy as np
from bench_encode import matmul_peak, model_flops, timed

ST_FP32 = "ST torch f32"


def load_task(
    n_docs: int, n_queries: int
) -> tuple[list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """Documents (the first n_docs of the dev corpus) and queries judged against them, with qrels."""
    folder = _common.DEV_DATA / "DebianDescRetrieval"
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8")][:n_docs]
    doc_ids = {d["_id"] for d in corpus}
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        q, d, score = line.split("\t")
        if d in doc_ids:
            qrels.setdefault(q, {})[d] = int(score)
    queries = [
        q
        for q in (json.loads(x) for x in (folder / "queries.jsonl").open(encoding="utf-8"))
        if q["_id"] in qrels
    ]
    queries = queries[:n_queries]
    qrels = {q["_id"]: qrels[q["_id"]] for q in queries}
    return (
        [d["text"] for d in corpus],
        [q["text"] for q in queries],
        [d["_id"] for d in corpus],
        qrels | {"__query_ids__": {q["_id"]: i for i, q in enumerate(queries)}},
    )


def build_variants(
    model: str, threads: int, args: argparse.Namespace
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """name -> {"encode": fn(texts, side), "precision", "family", "guard"}; the torch f32 Encoder."""
    import torch
    from sentence_transformers import SentenceTransformer

    from kalm_rag import Encoder
    from kalm_rag.backends.guard import GuardPolicy, bundled_texts
    from kalm_rag.backends.select import _Session
    from kalm_rag.runtime import cpu_has_fast_bf16

    torch.set_num_threads(threads)
    ours = Encoder.from_pretrained(model, backend="torch", dtype="float32", num_threads=threads)
    prompts = {"query": ours.config.query_prefix(), "document": ours.config.document_prefix()}
    session = _Session(ours, bundled_texts(), GuardPolicy(), threads)
    variants: dict[str, dict[str, Any]] = {}

    def st_encode(st: Any) -> Callable[[list[str], str], Any]:
        return lambda texts, side: np.asarray(
            st.encode(
                texts, batch_size=args.batch_size, prompt=prompts[side] or None, normalize_embeddings=True
            ),
            dtype=np.float32,
        )

    def our_encode(enc: Any) -> Callable[[list[str], str], Any]:
        return lambda texts, side: (enc.encode_query if side == "query" else enc.encode_document)(
            texts, batch_size=args.batch_size
        )

    st = SentenceTransformer(str(ours.source_folder), device="cpu")
    st.max_seq_length = ours.max_length
    variants[ST_FP32] = {"encode": st_encode(st), "precision": "float32", "family": "sentence-transformers"}
    precisions = [p for p in args.precisions if p != "bfloat16" or cpu_has_fast_bf16()]
    for backend in args.engines:
        for precision in precisions:
            if backend == "onnx" and precision == "bfloat16":
                continue
            if backend == "torch":
                if precision == "int8":
                    continue
                enc = copy.copy(ours)
                if precision == "bfloat16":
                    enc.model = copy.deepcopy(ours.model).to(torch.bfloat16)
                variants[f"ours torch {precision}"] = {
                    "encode": our_encode(enc),
                    "precision": precision,
                    "family": "kalm_rag",
                }
                continue
            runner, guard, _ = session.try_option(backend, precision)
            enc = copy.copy(ours)
            enc.runner = runner
            variants[f"ours {backend} {precision}"] = {
                "encode": our_encode(enc),
                "precision": precision,
                "family": "kalm_rag",
                "guard": guard.to_dict(),
            }
            if precision == "float32":  # sentence-transformers on the same exported model
                st_b = SentenceTransformer(str(ours.source_folder), device="cpu")
                st_b.max_seq_length = ours.max_length
                st_b[0].model = _ExportedModel(runner, st_b[0].model.config)
                variants[f"ST {backend} f32"] = {
                    "encode": st_encode(st_b),
                    "precision": "float32",
                    "family": "sentence-transformers",
                }
    return ours, variants


class _ExportedModel:
    """Stands in for the torch model inside sentence-transformers' Transformer module."""

    def __new__(cls, runner: Any, config: Any) -> Any:
        import torch

        class Shim(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.config = config
                self.runner = runner

            def forward(self, input_ids: Any, attention_mask: Any, **_: Any) -> dict[str, Any]:
                hidden = self.runner(input_ids.numpy(), attention_mask.numpy())
                return {"last_hidden_state": torch.from_numpy(hidden)}

        return Shim()


def run_case(model: str, threads: int, task: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    docs, queries, doc_ids, qrels = task
    ours, variants = build_variants(model, threads, args)
    sides = {"document": docs, "query": queries}
    for spec in variants.values():  # warm-up: first calls allocate buffers and pick kernels
        spec["encode"](docs[: args.batch_size], "document")
    times: dict[str, dict[str, list[tuple[float, float]]]] = {n: {s: [] for s in sides} for n in variants}
    outputs: dict[str, dict[str, Any]] = {n: {} for n in variants}
    names = list(variants)
    for round_no in range(args.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            for side, texts in sides.items():
                outputs[name][side], wall, cpu = timed(
                    lambda n=name, s=side, t=texts: variants[n]["encode"](t, s)
                )
                times[name][side].append((wall, cpu))
    lengths = {
        s: [len(i) for i in ours._fast_tokenizer([p + t for t in texts])[0]]
        for s, texts, p in (
            ("document", docs, ours.config.document_prefix()),
            ("query", queries, ours.config.query_prefix()),
        )
    }
    flops = {s: model_flops(ours, lengths[s]) for s in sides}
    peaks = {p: matmul_peak(getattr(torch, p if p != "int8" else "float32")) for p in ("float32", "bfloat16")}
    reference = outputs["ours torch float32"] if "ours torch float32" in outputs else outputs[ST_FP32]
    rows = []
    for name, spec in variants.items():
        row: dict[str, Any] = {
            "variant": name,
            "family": spec["family"],
            "precision": spec["precision"],
            "guard": spec.get("guard"),
        }
        for side in sides:
            walls = [w for w, _ in times[name][side]]
            cpus = [c for _, c in times[name][side]]
            base = times[ST_FP32][side]
            peak = peaks.get(spec["precision"], peaks["float32"])
            row[side] = {
                "texts_per_s": round(len(sides[side]) / statistics.median(walls), 1),
                "texts_per_cpu_s": round(len(sides[side]) / statistics.median(cpus), 1),
                "speedup_vs_st_fp32_wall": round(
                    statistics.median(b[0] / w[0] for b, w in zip(base, times[name][side], strict=True)), 3
                ),
                "speedup_vs_st_fp32_cpu": round(
                    statistics.median(b[1] / w[1] for b, w in zip(base, times[name][side], strict=True)), 3
                ),
                "percent_of_peak": round(100 * flops[side] / statistics.median(cpus) / peak, 1),
                "wall_s": [round(w, 3) for w in walls],
                "cpu_s": [round(c, 3) for c in cpus],
            }
        row.update(_quality(outputs[name], reference, doc_ids, qrels))
        rows.append(row)
    return {
        "model": model,
        "threads": threads,
        "n_docs": len(docs),
        "n_queries": len(queries),
        "doc_tokens": sum(lengths["document"]),
        "query_tokens": sum(lengths["query"]),
        "matmul_peak_gflops_per_cpu_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "default": _default_choice(model, threads),
        "rows": rows,
    }


def _quality(
    out: dict[str, Any], ref: dict[str, Any], doc_ids: list[str], qrels: dict[str, Any]
) -> dict[str, Any]:
    from kalm_rag.eval.metrics import retrieval_metrics, top_k_run

    cos = np.concatenate(
        [
            (out[s] * ref[s]).sum(1) / np.linalg.norm(out[s], axis=1) / np.linalg.norm(ref[s], axis=1)
            for s in ("document", "query")
        ]
    )
    scores, ref_scores = out["query"] @ out["document"].T, ref["query"] @ ref["document"].T
    top, ref_top = np.argsort(-scores, 1)[:, :10], np.argsort(-ref_scores, 1)[:, :10]
    agreement = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top, strict=True)]))
    query_ids = sorted(qrels["__query_ids__"], key=qrels["__query_ids__"].get)
    judged = {q: d for q, d in qrels.items() if q != "__query_ids__"}
    ndcg = retrieval_metrics(judged, top_k_run(scores, query_ids, doc_ids, k=10), ["ndcg@10"])["ndcg@10"]
    return {
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "top10_agreement": round(agreement, 4),
        "ndcg@10": round(ndcg, 4),
    }


def _default_choice(model: str, threads: int) -> dict[str, Any]:
    """What ``Encoder.from_pretrained(model)`` picks on this machine (the default backend="auto")."""
    from kalm_rag import Encoder

    enc = Encoder.from_pretrained(model, num_threads=threads)
    choice = enc.backend_choice
    return {"backend": enc.backend, "reason": choice.reason if choice else "GPU/torch path"}


def report(
    results: list[dict[str, Any]], machine: dict[str, Any], out: Path, name: str = "encode_backends"
) -> str:
    headers = [
        "model",
        "thr",
        "variant",
        "docs/s",
        "docs/CPU-s",
        "x ST f32 (docs, CPU)",
        "queries/s",
        "x ST f32 (queries, CPU)",
        "%peak docs",
        "cos min",
        "top-10 agr.",
        "nDCG@10",
        "guard",
    ]
    rows = []
    for r in results:
        for v in r["rows"]:
            d, q = v["document"], v["query"]
            guard = "" if not v.get("guard") else ("pass" if v["guard"]["passed"] else "refused")
            label = v["variant"] + (" (default)" if _is_default(v, r) else "")
            rows.append(
                [
                    r["model"],
                    r["threads"],
                    label,
                    d["texts_per_s"],
                    d["texts_per_cpu_s"],
                    f"{d['speedup_vs_st_fp32_cpu']:.2f}x",
                    q["texts_per_s"],
                    f"{q['speedup_vs_st_fp32_cpu']:.2f}x",
                    d["percent_of_peak"],
                    f"{v['cosine_min']:.5f}",
                    v["top10_agreement"],
                    v["ndcg@10"],
                    guard,
                ]
            )
    defaults = [
        f"- {r['model']}, {r['threads']} thread(s): `{r['default']['backend']}` ({r['default']['reason']})"
        for r in results
    ]
    text = "\n".join(
        [
            "# Encoding backends: sentence-transformers vs kalm_rag (torch, OpenVINO, ONNX Runtime)",
            "",
            f"Command: `{machine['command']}`",
            "",
            (__doc__ or "").split("\n\n", 2)[2].strip(),
            "",
            _common.markdown_table(headers, rows),
            "",
            'What `Encoder.from_pretrained()` (backend="auto") chose:',
            "",
            *defaults,
            "",
            f"![backends]({name}.png)",
            "",
            "## Machine",
            "",
            _common.machine_summary(machine),
            "",
        ]
    )
    _common.write_text_atomic(out / f"{name}.md", text)
    return _common.text_table(headers, rows)


def _is_default(variant: dict[str, Any], result: dict[str, Any]) -> bool:
    return variant["variant"] == f"ours {result['default']['backend']}"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    plt = _common.pyplot()
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 3.2 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        names = [v["variant"] for v in r["rows"]]
        xs = np.arange(len(names))
        for offset, side in ((-0.2, "document"), (0.2, "query")):
            rates = [v[side]["speedup_vs_st_fp32_cpu"] for v in r["rows"]]
            bars = ax.bar(xs + offset, rates, 0.4, label={"document": "documents", "query": "queries"}[side])
            for bar, rate in zip(bars, rates, strict=True):
                ax.annotate(
                    f"{rate:.2f}",
                    (bar.get_x() + bar.get_width() / 2, rate),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(xs, names, fontsize=7, rotation=20, ha="right")
        ax.set_title(
            f"{r['model']}, {r['threads']} thread(s): speed vs sentence-transformers f32 (CPU time)",
            fontsize=9,
        )
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _common.save_figure(fig, path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2", "multilingual-e5-small"])
    parser.add_argument(
        "--engines", nargs="+", default=["torch", "openvino", "onnx"], help="our backends to run"
    )
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--n-docs", type=int, default=200, help="documents (dev DebianDesc corpus, in order)")
    parser.add_argument("--n-queries", type=int, default=200, help="queries judged against those documents")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "bfloat16", "int8"],
        help="our precisions to run (bfloat16 only where the CPU has fast bf16)",
    )
    parser.add_argument("--name", default="encode_backends", help="result file name (without suffix)")
    parser.add_argument("--from-json", type=Path, help="re-render the report and plot of a saved JSON")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        plot(saved["results"], args.out / f"{args.name}.png")
        print(report(saved["results"], saved["machine"], args.out, args.name))
        return 0
    task = load_task(args.n_docs, args.n_queries)
    load_before = _common.machine_info()["load_average_1_5_15"]
    results = []
    for model in args.models:
        for threads in args.threads:
            start = time.perf_counter()
            results.append(run_case(model, threads, task, args))
            print(f"{model}, {threads} thread(s): {time.perf_counter() - start:.0f}s", flush=True)
            machine = _common.machine_info()
            machine["load_average_before"] = load_before
            args.out.mkdir(parents=True, exist_ok=True)  # saved after every case: partial runs count
            _common.write_json(
                args.out / f"{args.name}.json",
                {"benchmark": "encode_backends", "results": results, "machine": machine},
            )
    plot(results, args.out / f"{args.name}.png")
    print(report(results, machine, args.out, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
