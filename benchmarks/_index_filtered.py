"""Filtered search for bench_index.py --filtered: recall@10 against exact filtered search and
queries/s for every backend at four selectivities, plus hybrid (dense + BM25, RRF) with a filter.

Payloads are seeded and independent of the text: ``day`` 0..999 (``{"day": {"lt": 500}}``
keeps 50%, ``{"day": 42}`` 0.1%), ``tenant`` 0..9 (``{"tenant": 3}``: 10%) and ``source``
"s0".."s99" (``{"source": "s7"}``: 1%): a range, an integer match and a keyword match.
Every backend runs with default settings, as a user gets it. Within a backend, unfiltered and
filtered single-query searches alternate query by query, so their speeds are measured side by
side under the same machine load. For HnswIndex the run also times each plan forced at each
selectivity (exact scoring of the allowed vectors vs. an unfiltered search filtered after),
which is where the default plan's crossover comes from.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

FILTERS: dict[str, dict[str, Any]] = {
    "50%": {"day": {"lt": 500}},
    "10%": {"tenant": 3},
    "1%": {"source": "s7"},
    "0.1%": {"day": 42},
}
K = 10
HYBRID_FETCH = 50  # RetrieverConfig.candidates
HYBRID_FILTER = "10%"


def make_payloads(n: int, seed: int = 14) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "day": rng.integers(0, 1000, n),
        "tenant": rng.integers(0, 10, n),
        "source": rng.integers(0, 100, n),
    }


def payload_dicts(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"day": int(d), "tenant": int(t), "source": f"s{int(s)}"}
        for d, t, s in zip(columns["day"], columns["tenant"], columns["source"], strict=True)
    ]


def masks(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "50%": columns["day"] < 500,
        "10%": columns["tenant"] == 3,
        "1%": columns["source"] == 7,
        "0.1%": columns["day"] == 42,
    }


def exact_truth(base: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
    """Row numbers of the exact top-k (dot product) among the rows ``mask`` allows."""
    rows = np.flatnonzero(mask) if mask is not None else np.arange(len(base))
    scores = queries @ base[rows].T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows[top]


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & {str(t) for t in truth[i]}) / len(truth[i]) for i, f in enumerate(found)])
    )


def build(case: str, base: np.ndarray, payloads: list[dict[str, Any]]) -> Any:
    from kalm_rag.index.brute import BruteForceIndex
    from kalm_rag.index.hnsw import HnswIndex
    from kalm_rag.index.qdrant import QdrantConfig, QdrantIndex

    ids = [str(i) for i in range(len(base))]
    index: Any
    if case == "exact":
        index = BruteForceIndex(base.shape[1])
    elif case == "kalm-hnsw":
        index = HnswIndex(base.shape[1])
    elif case == "qdrant-edge":
        index = QdrantIndex(base.shape[1])
    else:
        index = QdrantIndex(base.shape[1], location=":memory:", config=QdrantConfig(batch_size=1024))
    step = len(base) if case == "kalm-hnsw" else 10_000
    for start in range(0, len(base), step):
        index.add(
            ids[start : start + step], base[start : start + step], payloads=payloads[start : start + step]
        )
    if case == "qdrant-edge":
        index.optimize()
    return index


def timed_rounds(
    searches: dict[str, Any], queries: np.ndarray, budget_s: float, min_queries: int = 20
) -> tuple[dict[str, list[list[str]]], dict[str, float], int]:
    """Single-query searches, every search kind in turn for each query (order alternating)."""
    found: dict[str, list[list[str]]] = {name: [] for name in searches}
    spent = dict.fromkeys(searches, 0.0)
    order = list(searches)
    start = time.perf_counter()
    n = 0
    for i, q in enumerate(queries):
        for name in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            found[name].append(searches[name](q))
            spent[name] += time.perf_counter() - t0
        n = i + 1
        if time.perf_counter() - start > budget_s and n >= min_queries:
            break
    return found, spent, n


def run_case(case: str, data: Path, budget_s: float) -> dict[str, Any]:
    bundle = np.load(data, allow_pickle=False)
    base, queries = bundle["base"], bundle["queries"]
    columns = {name: bundle[f"col_{name}"] for name in ("day", "tenant", "source")}
    payloads = payload_dicts(columns)
    t0 = time.perf_counter()
    index = build(case, base, payloads)
    out: dict[str, Any] = {"case": case, "build_s": round(time.perf_counter() - t0, 2)}

    def search(spec: dict[str, Any] | None, k: int = K) -> Any:
        return lambda q: [h.id for h in index.search(q, k=k, filter=spec)[0]]

    searches = {"none": search(None), **{name: search(spec) for name, spec in FILTERS.items()}}
    slow = case == "qdrant-local"  # pure-Python exact search: ~1 s per filtered query at 100k
    found, spent, n = timed_rounds(searches, queries, budget_s, min_queries=5 if slow else 20)
    truth = {"none": bundle["truth_none"], **{name: bundle[f"truth_{name}"] for name in FILTERS}}
    out["queries_timed"] = n
    out["searches"] = {
        name: {
            "queries_per_s": round(n / spent[name], 1),
            "recall_at_10": round(recall(found[name], truth[name][:n]), 4),
        }
        for name in searches
    }
    out["hybrid"] = hybrid(index, bundle, budget_s / 2, min_queries=5 if slow else 20)
    if case == "kalm-hnsw":
        out["plans"] = hnsw_plans(index, bundle, budget_s / 4)
    if case == "qdrant-edge":
        out["edge_info"] = index.info()
        out["payload_indexes"] = dict(index._engine._schema.kinds)
    index.close()
    return out


def hybrid(index: Any, bundle: Any, budget_s: float, min_queries: int = 20) -> dict[str, Any]:
    """Dense (k=50, filtered) + BM25 (k=50, filtered) fused by RRF, as Retriever.search(hybrid=True)."""
    from kalm_rag.index.bm25 import BM25Index
    from kalm_rag.index.fusion import reciprocal_rank_fusion

    texts = json.loads(str(bundle["texts"]))
    query_texts = json.loads(str(bundle["query_texts"]))
    columns = {name: bundle[f"col_{name}"] for name in ("day", "tenant", "source")}
    bm25 = BM25Index()
    t0 = time.perf_counter()
    bm25.add([str(i) for i in range(len(texts))], texts, payloads=payload_dicts(columns))
    bm25.search("warm up", k=1)
    build_s = time.perf_counter() - t0
    spec = FILTERS[HYBRID_FILTER]
    dense_truth = bundle[f"truth50_{HYBRID_FILTER}"]
    found: list[list[str]] = []
    truth: list[list[str]] = []
    spent = 0.0
    start = time.perf_counter()
    for i, (q, text) in enumerate(zip(bundle["queries"], query_texts, strict=True)):
        t = time.perf_counter()
        dense = index.search(q, k=HYBRID_FETCH, filter=spec)[0]
        sparse = bm25.search(text, k=HYBRID_FETCH, filter=spec)[0]
        fused = reciprocal_rank_fusion([dense, sparse], 60, limit=K)
        spent += time.perf_counter() - t
        found.append([h.id for h in fused])
        exact_dense = [str(r) for r in dense_truth[i]]
        truth.append([h.id for h in reciprocal_rank_fusion([exact_dense, sparse], 60, limit=K)])
        if time.perf_counter() - start > budget_s and i + 1 >= min_queries:
            break
    n = len(found)
    rec = float(np.mean([len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]))
    return {
        "filter": HYBRID_FILTER,
        "queries_timed": n,
        "queries_per_s": round(n / spent, 1),
        "recall_at_10": round(rec, 4),
        "bm25_build_s": round(build_s, 2),
    }


def hnsw_plans(index: Any, bundle: Any, budget_s: float) -> dict[str, Any]:
    """Each HnswIndex plan forced at each selectivity: queries/s and recall (the crossover)."""
    forced = {
        "exact": replace(index.config, exact_filter_limit=10**9),
        "post": replace(index.config, exact_filter_limit=1, exact_cost_ratio=1.0, max_filter_fetch=10**6),
    }
    default = index.config
    out: dict[str, Any] = {}
    queries = bundle["queries"]
    for name, spec in FILTERS.items():
        for plan, cfg in forced.items():
            index.config = cfg
            found, spent, n = timed_rounds(
                {"q": lambda q, s=spec: [h.id for h in index.search(q, k=K, filter=s)[0]]}, queries, budget_s
            )
            out[f"{name} {plan}"] = {
                "queries_per_s": round(n / spent["q"], 1),
                "recall_at_10": round(recall(found["q"], bundle[f"truth_{name}"][:n]), 4),
            }
        index.config = default
    return out


def prepare_filtered(
    base: np.ndarray, queries: np.ndarray, texts: list[str], query_texts: list[str], folder: Path
) -> Path:
    columns = make_payloads(len(base))
    arrays: dict[str, Any] = {f"col_{k}": v for k, v in columns.items()}
    arrays["truth_none"] = exact_truth(base, queries, K, None)
    for name, mask in masks(columns).items():
        arrays[f"truth_{name}"] = exact_truth(base, queries, K, mask)
        if name == HYBRID_FILTER:
            arrays[f"truth50_{name}"] = exact_truth(base, queries, HYBRID_FETCH, mask)
    data = folder / "filtered.npz"
    np.savez(
        data,
        base=base,
        queries=queries,
        texts=np.array(json.dumps(texts)),
        query_texts=np.array(json.dumps(query_texts)),
        **arrays,
    )
    return data


def report(results: list[dict[str, Any]], meta: dict[str, Any], out: Path, name: str) -> None:
    selectivity = {name: float(np.mean(mask)) for name, mask in meta.pop("_masks").items()}
    payload = {**meta, "selectivity": selectivity, "filters": FILTERS, "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    head = "| backend | unfiltered q/s | recall | " + " | ".join(
        f"{f} ({selectivity[f]:.2%}) q/s | recall | speed vs unfiltered" for f in FILTERS
    )
    lines = [
        f"# Filtered search: {meta['vectors']:,} vectors x {meta['dim']} ({meta['real_vectors']:,} real, "
        f"{meta['mixed_vectors']:,} mixed from real ones), default settings",
        "",
        f"{meta['queries']} held-out real queries (as many as fit the time budget are timed), k=10. "
        "Recall@10 against exact search over the items the filter allows. Single-query searches "
        "on 1 thread; within a backend, unfiltered and filtered searches alternate query by query. "
        f"Filters: {json.dumps(FILTERS)}. Machine: {meta['machine']}.",
        "",
        head + " |",
        "|---|" + "---:|" * (2 + 3 * len(FILTERS)),
    ]
    for r in results:
        s = r["searches"]
        none_qps = s["none"]["queries_per_s"]
        cells = [f"{r['case']} ({r['queries_timed']} q)", str(none_qps), str(s["none"]["recall_at_10"])]
        for f in FILTERS:
            cells += [
                str(s[f]["queries_per_s"]),
                str(s[f]["recall_at_10"]),
                f"{s[f]['queries_per_s'] / none_qps:.0%}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Hybrid (dense k={HYBRID_FETCH} + BM25 k={HYBRID_FETCH}, RRF, top 10) with filter "
        f"{json.dumps(FILTERS[HYBRID_FILTER])}; recall against the same fusion over exact dense results:",
        "",
        "| backend | hybrid q/s | recall@10 |",
        "|---|---:|---:|",
        *[
            f"| {r['case']} | {r['hybrid']['queries_per_s']} | {r['hybrid']['recall_at_10']} |"
            for r in results
        ],
    ]
    plans = next((r["plans"] for r in results if "plans" in r), None)
    if plans:
        lines += [
            "",
            "HnswIndex plans forced at each selectivity (the default plan picks per filter; see "
            "kalm_rag/index/hnsw_filter.py):",
            "",
            "| filter | exact q/s | exact recall | post-filter q/s | post-filter recall |",
            "|---|---:|---:|---:|---:|",
            *[
                f"| {f} | {plans[f + ' exact']['queries_per_s']} | {plans[f + ' exact']['recall_at_10']} | "
                f"{plans[f + ' post']['queries_per_s']} | {plans[f + ' post']['recall_at_10']} |"
                for f in FILTERS
            ],
        ]
    lines.append("")
    (out / f"{name}.md").write_text("\n".join(lines))
    plot(results, selectivity, out / f"{name}.png")
    print("\n".join(lines))


def plot(results: list[dict[str, Any]], selectivity: dict[str, float], file: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the eval extra brings matplotlib
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, (ax_speed, ax_recall) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [selectivity[f] * 100 for f in FILTERS]
    for r in results:
        s = r["searches"]
        line = ax_speed.plot(xs, [s[f]["queries_per_s"] for f in FILTERS], marker="o", label=r["case"])[0]
        ax_speed.axhline(s["none"]["queries_per_s"], color=line.get_color(), linestyle=":", linewidth=1)
        ax_recall.plot(xs, [s[f]["recall_at_10"] for f in FILTERS], marker="o", label=r["case"])
    for ax in (ax_speed, ax_recall):
        ax.set_xscale("log")
        ax.set_xlabel("% of items the filter keeps")
    ax_speed.set_yscale("log")
    ax_speed.set_ylabel("queries/s (dotted: unfiltered)")
    ax_recall.set_ylabel("recall@10 vs exact filtered search")
    ax_recall.set_ylim(0, 1.02)
    ax_recall.axhline(0.95, color="grey", linestyle="--", linewidth=1)
    ax_speed.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=110)
