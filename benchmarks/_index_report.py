"""The unfiltered index benchmark's report (bench_index.py): paired ratios, JSON and markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def paired(numerators: list[float], denominators: list[float]) -> float:
    return round(float(np.median(np.asarray(numerators) / np.asarray(denominators))), 3)


def report(results: list[dict[str, Any]], meta: dict[str, Any], out: Path, name: str) -> None:
    by = {r["case"]: r for r in results}
    ratios: dict[str, Any] = {}
    if "hnswlib-raw" in by and "kalm-hnsw" in by:
        raw, ours = by["hnswlib-raw"], by["kalm-hnsw"]
        # Builds and batch rounds ran the two back to back: the median of per-pair ratios
        # cancels most of the machine's changing load; single queries were interleaved.
        ratios["kalm_hnsw_build_time_vs_raw"] = paired(ours["build_s_repeats"], raw["build_s_repeats"])
        ratios["kalm_hnsw_query_time_vs_raw"] = round(raw["queries_per_s"] / ours["queries_per_s"], 3)
        ratios["kalm_hnsw_batch_query_time_vs_raw"] = paired(ours["batch_s_rounds"], raw["batch_s_rounds"])
        ratios["kalm_hnsw_recall_minus_raw"] = round(ours["recall_at_10"] - raw["recall_at_10"], 4)
    if "qdrant-edge" in by and "qdrant-local" in by:
        ratios["edge_qps_vs_local"] = round(
            by["qdrant-edge"]["queries_per_s"] / by["qdrant-local"]["queries_per_s"], 1
        )
    payload = {**meta, "results": results, "ratios": ratios}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [
        f"# Index benchmark: {meta['vectors']:,} vectors x {meta['dim']} "
        f"({meta['mixed_vectors']:,} mixed from real ones)",
        "",
        f"{meta['queries']} held-out real queries, k=10. queries/s: single-query searches on 1 thread, "
        f"engines of a group interleaved query by query; batch: one call with all timed queries "
        f"(median of alternating rounds); build: fastest of alternating repeats. Builds and batches on "
        f"{meta['threads']} thread(s). Machine: {meta['machine']}.",
        f"HNSW M={meta['m']} ef_construction={meta['ef_construction']} ef={meta['ef']}; "
        f"qdrant-edge ef_construct={meta['qdrant_ef_construction']} ef={meta['qdrant_ef']}.",
        "",
        "| case | build s | queries/s | batch queries/s | recall@10 | build RSS MiB (heap + files) "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['case']} | {r['build_s']} | {r['queries_per_s']} | {r['batch_queries_per_s']} | "
            f"{r['recall_at_10']} | {r['build_rss_mb']} ({r['build_rss_anon_mb']} + "
            f"{r['build_rss_file_mb']}) | {r['peak_rss_mb']} |"
            for r in results
        ],
        "",
        *[f"- {k}: {v}" for k, v in ratios.items()],
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
