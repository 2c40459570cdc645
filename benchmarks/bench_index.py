"""Vector-index benchmark on real embeddings: build time, queries/s, recall@10 and memory.

Compares, at the same HNSW settings, raw hnswlib with kalm_rag's HnswIndex (target: within 10%
on build and query time at equal recall), and embedded QdrantIndex (qdrant-edge) with
qdrant-client's local mode (target: >= 50x the queries/s at recall@10 >= 0.95), with exact
search as the reference. Each group of cases runs in a fresh subprocess so its memory is its
own; raw hnswlib and HnswIndex share one so their builds alternate and their query rounds
interleave (a fair comparison on a machine whose load changes while the benchmark runs).

Data: every real text that ships with the repo's shared data (dev corpora, gettext sentences,
the Debian training pairs: ~63k unique base texts) embedded with the packaged model, truncated
to ``--max-length`` tokens. The first run embeds them (long on 2 busy cores) and caches the
vectors in ``--cache-dir``. For ``--n`` beyond the real count, extra vectors are made by mixing
two real embeddings plus a little noise (then normalising); the report says how many. Queries
are held-out real texts (dev queries and 1 in 20 training queries), never in the base set.

    python benchmarks/bench_index.py                      # 20k vectors: minutes on 2 cores
    python benchmarks/bench_index.py --n 100000 --queries 1000 --local-budget-s 40
    python benchmarks/bench_index.py --filtered --n 100000 --queries 1000   # filtered search
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/OpenMP start: see DESIGN.md
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"
# Each group runs in its own process; the hnsw pair shares one so its query rounds interleave.
GROUPS = ("exact", "hnswlib-raw+kalm-hnsw", "qdrant-edge", "qdrant-local")


# -- data --------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def real_texts() -> tuple[list[str], list[str]]:
    """(base pool, query texts): every unique real text in the shared data, shortest first.

    Queries (dev retrieval queries, 1 in 20 Debian training queries) are held out of the pool.
    The pool: dev corpora and gettext sentences, and both sides of the Debian, gettext and man
    page training pairs (~130k unique texts). Sorted by length (stable), so ``--n`` vectors
    come from the shortest texts, which are the cheapest to embed on a CPU.
    """
    dev, train = SHARED / "dev", SHARED / "train"
    queries: list[str] = []
    base: list[str] = []
    for task in ("DebianDescRetrieval", "ManPageRetrieval"):
        base += [f"{d['title']} {d['text']}".strip() for d in read_jsonl(dev / task / "corpus.jsonl")]
        queries += [q["text"] for q in read_jsonl(dev / task / "queries.jsonl")]
    for pair in sorted((dev / "GettextBitextMining").glob("en-*")):
        base += [
            s["text"] for name in ("sentences1.jsonl", "sentences2.jsonl") for s in read_jsonl(pair / name)
        ]
    for i, row in enumerate(read_jsonl(train / "debian_pairs.jsonl")):
        base.append(row["positive"])
        (queries if i % 20 == 0 else base).append(row["query"])  # 1 in 20 training queries held out
    for name in ("gettext_pairs.jsonl", "manpage_pairs.jsonl"):
        for row in read_jsonl(train / name):
            base += [row["query"], row["positive"]]
    queries = list(dict.fromkeys(queries))
    held = set(queries)
    base = sorted((t for t in dict.fromkeys(base) if t not in held and t.strip()), key=len)
    return base, queries


EMBED_CHUNK = 8192


def embed(
    texts: list[str], *, kind: str, max_length: int, cache: Path, cached_only: bool = False
) -> np.ndarray:
    """Embeddings of ``texts`` with the packaged model, cached in chunks of EMBED_CHUNK texts
    (keyed by their content), so an interrupted run keeps what it finished. ``cached_only``:
    stop at the first chunk not in the cache (fewer rows come back)."""
    encoder: Any = None
    parts = []
    for start in range(0, len(texts), EMBED_CHUNK):
        chunk = texts[start : start + EMBED_CHUNK]
        key = hashlib.sha256(json.dumps([kind, max_length, chunk]).encode()).hexdigest()[:16]
        file = cache / f"{kind}-{key}.npy"
        if file.exists():
            parts.append(np.load(file))
            continue
        if cached_only:
            break
        if encoder is None:
            from kalm_rag import Encoder

            encoder = Encoder.from_pretrained(max_length=max_length, dtype="float32")
        encode = encoder.encode_query if kind == "query" else encoder.encode_document
        print(f"embedding {kind} texts {start}-{start + len(chunk)} of {len(texts)}", file=sys.stderr)
        vectors = np.asarray(encode(chunk, batch_size=64), np.float32)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, file)
        parts.append(vectors)
    if not parts:
        return np.empty((0, 384), np.float32)
    return np.concatenate(parts)


def mix(real: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` synthetic vectors: a convex mix of two real embeddings plus small noise."""
    return mix_with_parents(real, count, seed)[0]


def mix_with_parents(real: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``mix`` and, per synthetic vector, the row of the real embedding weighted most."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(real), size=(2, count))
    w = rng.uniform(0.6, 0.9, size=(count, 1)).astype(np.float32)
    out = (
        w * real[a]
        + (1 - w) * real[b]
        + rng.normal(scale=0.02, size=(count, real.shape[1])).astype(np.float32)
    )
    normalised: np.ndarray = out / np.linalg.norm(out, axis=1, keepdims=True)
    return normalised, a


# -- one case, in its own process --------------------------------------------------------------
def rss_mb(field: str = "VmRSS") -> float:
    """Resident (VmRSS) or peak resident (VmHWM) memory of this process, in MiB.

    VmHWM rather than getrusage's ru_maxrss, which a child inherits from the parent it forked.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(case: str, base: np.ndarray, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Build one engine; return (search one query, search a batch, engine) with ids as str."""
    ids = [str(i) for i in range(len(base))]
    if case == "hnswlib-raw":
        import hnswlib

        raw = hnswlib.Index(space="ip", dim=base.shape[1])
        raw.init_index(
            max_elements=len(base), M=args.m, ef_construction=args.ef_construction, random_seed=100
        )
        raw.add_items(base, np.arange(len(base)), num_threads=args.threads)
        raw.set_ef(args.ef)
        return (
            lambda q: [str(i) for i in raw.knn_query(q, k=10, num_threads=1)[0][0]],
            lambda qs: [
                [str(i) for i in row] for row in raw.knn_query(qs, k=10, num_threads=args.threads)[0]
            ],
            raw,
        )
    from kalm_rag.index.brute import BruteForceIndex
    from kalm_rag.index.hnsw import HnswConfig, HnswIndex
    from kalm_rag.index.qdrant import QdrantConfig, QdrantIndex

    index: Any
    if case == "exact":
        index = BruteForceIndex(base.shape[1])
    elif case == "kalm-hnsw":
        cfg = HnswConfig(m=args.m, ef_construction=args.ef_construction, ef=args.ef, num_threads=args.threads)
        index = HnswIndex(base.shape[1], config=cfg)
    elif case == "qdrant-edge":
        qcfg = QdrantConfig(m=args.m, ef_construction=args.qdrant_ef_construction, ef=args.qdrant_ef)
        index = QdrantIndex(base.shape[1], config=qcfg)
    else:
        index = QdrantIndex(base.shape[1], location=":memory:", config=QdrantConfig(batch_size=1024))
    step = len(base) if case == "kalm-hnsw" else 10_000  # hnsw: one call, as raw hnswlib gets
    for start in range(0, len(base), step):
        index.add(ids[start : start + step], base[start : start + step])
    if case == "qdrant-edge":
        index.optimize()  # build every HNSW graph now, so searches are graph searches
    return (
        lambda q: [h.id for h in index.search(q, k=10)[0]],
        lambda qs: [[h.id for h in row] for row in index.search(qs, k=10)],
        index,
    )


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & {str(t) for t in truth[i]}) / 10 for i, f in enumerate(found)]))


def interleaved_queries(
    searches: dict[str, Any], queries: np.ndarray, budget_s: float
) -> tuple[dict[str, list[list[str]]], dict[str, float]]:
    """Single-query searches, alternating engines query by query (so a change in machine load
    hits all of them alike), for up to ``budget_s`` seconds: (ids found, seconds in total)."""
    found: dict[str, list[list[str]]] = {c: [] for c in searches}
    spent = dict.fromkeys(searches, 0.0)
    order = list(searches)
    start = time.perf_counter()
    for i, q in enumerate(queries):
        for case in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            found[case].append(searches[case](q))
            spent[case] += time.perf_counter() - t0
        if time.perf_counter() - start > budget_s and i >= 20:
            break
    return found, spent


def run_cases(cases: list[str], data: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build ``cases`` in this process (alternating repeats), then time their searches
    interleaved: a comparison stays fair on a machine whose load changes during the run."""
    bundle = np.load(data)
    base, queries, truth = bundle["base"], bundle["queries"], bundle["truth"]
    built: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {c: {"case": c, "build_s_repeats": []} for c in cases}
    for rep in range(args.build_repeats):  # alternate the order, keep the fastest build
        for case in cases if rep % 2 == 0 else list(reversed(cases)):
            built.pop(case, None)  # free the previous build first
            before = {f: rss_mb(f) for f in ("VmRSS", "RssAnon", "RssFile")}
            t0 = time.perf_counter()
            built[case] = build(case, base, args)
            results[case]["build_s_repeats"].append(round(time.perf_counter() - t0, 3))
            if "build_rss_mb" not in results[case]:  # the first build's growth: heap + mapped files
                results[case]["build_rss_mb"] = round(rss_mb() - before["VmRSS"], 1)
                results[case]["build_rss_anon_mb"] = round(rss_mb("RssAnon") - before["RssAnon"], 1)
                results[case]["build_rss_file_mb"] = round(rss_mb("RssFile") - before["RssFile"], 1)
    for case in cases:
        results[case]["build_s"] = min(results[case]["build_s_repeats"])
    budget = args.local_budget_s if "qdrant-local" in cases else args.query_budget_s
    found, spent = interleaved_queries({c: built[c][0] for c in cases}, queries, budget)
    n_timed = len(found[cases[0]])
    batch_s: dict[str, list[float]] = {c: [] for c in cases}
    for rnd in range(1 if "qdrant-local" in cases else args.rounds):  # alternating batch rounds
        for case in cases if rnd % 2 == 0 else cases[::-1]:
            t0 = time.perf_counter()
            batch_found = built[case][1](queries[:n_timed])
            batch_s[case].append(time.perf_counter() - t0)
    for case in cases:
        results[case].update(
            queries_timed=n_timed,
            queries_per_s=round(n_timed / spent[case], 1),
            recall_at_10=round(recall(found[case], truth), 4),
            batch_queries_per_s=round(n_timed / float(np.median(batch_s[case])), 1),
            batch_s_rounds=[round(x, 4) for x in batch_s[case]],
            batch_recall_at_10=round(recall(batch_found, truth), 4),
            peak_rss_mb=round(rss_mb("VmHWM"), 1),
        )
        if case == "qdrant-edge":
            results[case]["edge_info"] = built[case][2].info()
    return [results[c] for c in cases]


# -- driver ------------------------------------------------------------------------------------
def prepare(args: argparse.Namespace, folder: Path) -> tuple[Path, dict[str, Any]]:
    base_texts, query_texts = real_texts()
    rng = np.random.default_rng(0)
    # Embed whole chunks of the (shortest-first) pool: only as many as --n needs.
    wanted = min(len(base_texts), -(-args.n // EMBED_CHUNK) * EMBED_CHUNK)
    real = embed(
        base_texts[:wanted],
        kind="document",
        max_length=args.max_length,
        cache=args.cache_dir,
        cached_only=args.cached_only,
    )
    chosen = np.sort(rng.choice(len(query_texts), min(args.queries, len(query_texts)), replace=False))
    queries = embed(
        [query_texts[i] for i in chosen], kind="query", max_length=args.max_length, cache=args.cache_dir
    )
    n_real = min(args.n, len(real))
    order = rng.permutation(n_real) if args.n <= len(real) else rng.permutation(len(real))
    base = real[order]
    texts = [base_texts[i] for i in order]
    if args.n > n_real:
        mixed, parents = mix_with_parents(real, args.n - n_real)
        base = np.concatenate([base, mixed])
        texts += [base_texts[i] for i in parents]  # BM25 (hybrid) gets the dominant parent's text
    if args.filtered:
        from _index_filtered import prepare_filtered

        data = prepare_filtered(base, queries, texts, [query_texts[i] for i in chosen], folder)
    else:
        from kalm_rag.index.exact import top_k

        truth, _ = top_k(queries, base, 10, "dot")
        data = folder / "data.npz"
        np.savez(data, base=base, queries=queries, truth=truth)
    return data, {
        "vectors": int(args.n),
        "real_vectors": int(n_real),
        "mixed_vectors": int(args.n - n_real),
        "real_texts_available": len(real),
        "queries": len(queries),
        "dim": int(base.shape[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="vectors in the index")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated; '+' joins a group")
    parser.add_argument("--rounds", type=int, default=5, help="alternating batch-search rounds")
    parser.add_argument("--build-repeats", type=int, default=2, help="builds per case (fastest kept)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="build threads")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef", type=int, default=100)
    parser.add_argument("--qdrant-ef-construction", type=int, default=100)
    parser.add_argument("--qdrant-ef", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=64, help="encoder max tokens (texts are truncated)")
    parser.add_argument("--query-budget-s", type=float, default=10.0)
    parser.add_argument("--local-budget-s", type=float, default=20.0)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "kalm-rag" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default=None, help="results file stem (default index_<n>)")
    parser.add_argument("--embed-only", action="store_true", help="fill the embedding cache and stop")
    parser.add_argument(
        "--cached-only", action="store_true", help="use only cached document embeddings (mix the rest)"
    )
    parser.add_argument(
        "--filtered",
        action="store_true",
        help="filtered search at 50/10/1/0.1%% selectivity, every backend at defaults (+ hybrid)",
    )
    parser.add_argument("--filtered-budget-s", type=float, default=30.0, help="query time per backend")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.filtered:
            from _index_filtered import run_case

            print(json.dumps(run_case(args.worker, args.data, args.filtered_budget_s)))
            return
        print(json.dumps(run_cases(args.worker.split("+"), args.data, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data, meta = prepare(args, Path(tmp))
        if args.embed_only:
            print(json.dumps(meta))
            return
        meta.update(
            threads=args.threads,
            m=args.m,
            ef_construction=args.ef_construction,
            ef=args.ef,
            qdrant_ef_construction=args.qdrant_ef_construction,
            qdrant_ef=args.qdrant_ef,
            machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        )
        if args.filtered:
            run_filtered(args, data, meta)
            return
        results = []
        for group in args.groups.split(","):
            cmd = [sys.executable, __file__, "--worker", group, "--data", str(data), *sys.argv[1:]]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results += json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(results[-1]), file=sys.stderr)
        from _index_report import report

        report(results, meta, args.out, args.name or f"index_{args.n}")


def run_filtered(args: argparse.Namespace, data: Path, meta: dict[str, Any]) -> None:
    from _index_filtered import FILTERS, masks
    from _index_filtered import report as report_filtered

    cases = ("exact", "kalm-hnsw", "qdrant-edge", "qdrant-local")
    groups = [g for group in args.groups.split(",") for g in group.split("+") if g in cases]
    results = []
    for case in groups:
        cmd = [sys.executable, __file__, "--worker", case, "--data", str(data), *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{case} failed:\n{done.stderr[-4000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    bundle = np.load(data)
    meta["_masks"] = masks({name: bundle[f"col_{name}"] for name in ("day", "tenant", "source")})
    assert set(meta["_masks"]) == set(FILTERS)
    report_filtered(results, meta, args.out, args.name or f"index_filtered_{args.n}")


if __name__ == "__main__":
    main()
