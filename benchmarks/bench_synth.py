"""Synthetic-data generation speed and reply quality of a chat LLM backend.

Runs the real pipeline (text-to-persona on training texts of the dev tasks' kinds, then the
two-stage persona-based generation) and reports: model load time, completion tokens/s,
examples/hour, first-try parse rates per stage (JSON shape, and usable content), and a sample
of generated examples with their personas and instructions.

    python benchmarks/bench_synth.py                                    # auto: llama.cpp + Qwen if installed
    python benchmarks/bench_synth.py --backend transformers --model smollm2-135m --label smollm2
    python benchmarks/bench_synth.py --backend openai --model NAME --base-url http://host:8000/v1
    python benchmarks/bench_synth.py --no-constrain --label qwen-free   # without JSON-schema decoding
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, machine_info, write_json, write_text_atomic

TRAIN_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "train").resolve()
BITEXT_LANGUAGES = ("English", "German", "French", "Spanish", "Chinese", "Japanese", "Russian", "Ukrainian")


def corpus_sample(folder: Path, per_file: int, seed: int) -> list[str]:
    """English texts of the dev tasks' kinds: package descriptions, manual pages, UI messages."""
    rng = random.Random(seed)
    texts: list[str] = []
    for name, key in (
        ("debian_pairs", "positive"),
        ("manpage_pairs", "positive"),
        ("gettext_pairs", "query"),
    ):
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
        english = [r[key] for r in rows if r.get("lang", "en") in ("en", "en_US") or key == "query"]
        texts += rng.sample(english, min(per_file, len(english)))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="auto", choices=["auto", "llamacpp", "transformers", "openai"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-threads", type=int, default=None)
    ap.add_argument("--no-constrain", action="store_true")
    ap.add_argument("--persona-texts", type=int, default=2, help="texts per corpus file (3 files)")
    ap.add_argument("--brainstorms", type=int, default=1, help="brainstorms per retrieval shape (4 shapes)")
    ap.add_argument("--instructions", type=int, default=2, help="instructions asked per brainstorm")
    ap.add_argument("--symmetric", type=int, default=2, help="examples per one-stage task (sts, bitext)")
    ap.add_argument("--example-max-tokens", type=int, default=512)
    ap.add_argument("--max-retries", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-data", type=Path, default=TRAIN_DATA)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = ap.parse_args()

    from kalm_trainer.synth.generate import SynthConfig, generate_synthetic
    from kalm_trainer.synth.llm import LLMConfig, Sampling, load_chat_model
    from kalm_trainer.synth.personas import personas_from_texts

    llm_config = LLMConfig(
        backend=args.backend,
        model=args.model,
        base_url=args.base_url,
        dtype=args.dtype,
        batch_size=args.batch_size,
        n_threads=args.n_threads,
        constrain=not args.no_constrain,
    ).resolved()
    label = args.label or f"{llm_config.backend}-{Path(str(llm_config.model)).stem}"
    info = machine_info()
    began = time.perf_counter()
    llm = load_chat_model(llm_config)
    load_s = time.perf_counter() - began

    texts = corpus_sample(args.train_data, args.persona_texts, args.seed)
    began = time.perf_counter()
    personas, persona_stats = personas_from_texts(
        llm, texts, sampling=Sampling(96, 0.7, 0.95), max_retries=args.max_retries, seed=args.seed
    )
    persona_s = time.perf_counter() - began
    if not personas:
        raise SystemExit(f"no persona came back: {persona_stats}")

    config = SynthConfig(
        llm=llm_config,
        brainstorms_per_task=args.brainstorms,
        instructions_per_brainstorm=args.instructions,
        symmetric_examples=args.symmetric,
        max_retries=args.max_retries,
        example_max_tokens=args.example_max_tokens,
        bitext_languages=BITEXT_LANGUAGES,
        seed=args.seed,
    )
    began = time.perf_counter()
    result = generate_synthetic(llm, personas, config)
    generate_s = time.perf_counter() - began

    usage = getattr(llm, "usage", None)
    stats: dict[str, Any] = result.stats
    payload: dict[str, Any] = {
        "label": label,
        "machine": info,
        "load_average_after": machine_info()["load_average_1_5_15"],
        "llm": llm_config.to_dict(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "load_s": round(load_s, 1),
        "persona_s": round(persona_s, 1),
        "generate_s": round(generate_s, 1),
        "persona_stats": persona_stats,
        "stats": stats,
        "examples": len(result.examples),
        "examples_per_hour": round(3600 * len(result.examples) / generate_s, 1),
        "examples_per_hour_with_personas": round(3600 * len(result.examples) / (generate_s + persona_s), 1),
    }
    if usage is not None:
        payload["usage"] = {
            "requests": usage.requests,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "seconds": round(usage.seconds, 1),
            "completion_tokens_per_s": round(usage.completion_tokens_per_s, 2),
        }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / f"synth_{label}.json", payload)
    samples = [
        {
            "task": ex.task,
            "persona": ex.meta.get("persona"),
            "instruction": ex.instruction,
            "query": ex.query,
            "positive": ex.positives[0],
            "hard_negative": ex.negatives[0],
            "language": ex.meta.get("language"),
        }
        for ex in result.examples
    ]
    write_text_atomic(
        args.out_dir / f"synth_{label}_samples.jsonl",
        "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples),
    )
    rates = {
        stage: (stats.get(f"{stage}_first_try_json_rate"), stats.get(f"{stage}_first_try_rate"))
        for stage in ("brainstorm", "example")
    }
    rates["persona"] = (persona_stats["persona_first_try_json_rate"], persona_stats["persona_first_try_rate"])
    print(json.dumps({k: payload[k] for k in ("label", "load_s", "persona_s", "generate_s", "examples")}))
    print("examples/hour:", payload["examples_per_hour"], "| usage:", payload.get("usage"))
    print("first-try rates (JSON shape, usable):", rates)


if __name__ == "__main__":
    main()
