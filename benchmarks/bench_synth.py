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
import os
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


def speed_probe(llm: Any, requests: int, max_tokens: int, seed: int) -> dict[str, Any]:
    """Tokens/s on ``requests`` example-stage prompts (a fixed instruction, schema-constrained)."""
    import numpy as np
    from kalm_trainer.synth.llm import ChatMessage, Sampling
    from kalm_trainer.synth.parse import MalformedOutput, parse_example
    from kalm_trainer.synth.schemas import example_schema
    from kalm_trainer.synth.tasks import SYNTH_TASKS, example_values, load_prompt, render_prompt

    task = SYNTH_TASKS["short-long"]
    instruction = (
        "Given a question about a command-line tool, retrieve the manual page section that answers it"
    )
    rng = np.random.default_rng(seed)
    conversations: list[list[ChatMessage]] = []
    for _ in range(requests):
        values = example_values(
            task, rng, instruction=instruction, languages=("English",), bitext_languages=BITEXT_LANGUAGES
        )
        conversations.append(
            [{"role": "user", "content": render_prompt(load_prompt(task.example_prompt), values)}]
        )
    usage = llm.usage
    tokens_before = usage.completion_tokens
    began, cpu_began = time.perf_counter(), time.process_time()
    replies = llm.chat(
        conversations,
        sampling=Sampling(max_tokens, 0.8, 0.95),
        seed=seed,
        schema=example_schema(max_tokens * 4 // 3),
    )
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    tokens = usage.completion_tokens - tokens_before
    parsed = 0
    for reply in replies:
        try:
            parse_example(reply)
            parsed += 1
        except MalformedOutput:
            pass
    cores = len(os.sched_getaffinity(0))
    return {
        "requests": requests,
        "parsed_first_try": parsed,
        "completion_tokens": tokens,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "tokens_per_s": round(tokens / wall, 2),
        "est_tokens_per_s_dedicated": round(tokens * cores / cpu, 2),
        "replies": replies,
    }


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
    ap.add_argument("--speed-only", type=int, default=0, help="only time N example-stage requests")
    ap.add_argument("--label", default=None)
    ap.add_argument(
        "--examples-out", type=Path, default=None, help="also write every example as trainer JSONL here"
    )
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
    if args.speed_only:
        probe = speed_probe(llm, args.speed_only, args.example_max_tokens, args.seed)
        probe.update(label=label, machine=info, llm=llm_config.to_dict(), load_s=round(load_s, 1))
        probe["load_average_after"] = machine_info()["load_average_1_5_15"]
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(args.out_dir / f"synth_speed_{label}.json", probe)
        print(json.dumps({k: v for k, v in probe.items() if k not in ("replies", "machine", "llm")}))
        return

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
    usage = getattr(llm, "usage", None)  # local backends count tokens and seconds
    tokens_before = usage.completion_tokens if usage is not None else 0
    began, cpu_began = time.perf_counter(), time.process_time()
    result = generate_synthetic(llm, personas, config)
    generate_s, generate_cpu_s = time.perf_counter() - began, time.process_time() - cpu_began
    cores = len(os.sched_getaffinity(0))

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
        # CPU time of this process (all threads): on a shared machine the wall-clock rate says
        # more about the neighbours than the model; this estimates a dedicated machine of as
        # many cores (a lower bound where idle threads spin)
        "generate_cpu_s": round(generate_cpu_s, 1),
        # a server does the work elsewhere: this process's CPU time says nothing about it
        "est_examples_per_hour_dedicated": None
        if args.backend == "openai"
        else round(3600 * len(result.examples) * cores / generate_cpu_s, 1),
    }
    if usage is not None:
        payload["usage"] = {
            "requests": usage.requests,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "seconds": round(usage.seconds, 1),
            "completion_tokens_per_s": round(usage.completion_tokens_per_s, 2),
            "generation_completion_tokens": usage.completion_tokens - tokens_before,
            "est_generation_tokens_per_s_dedicated": round(
                (usage.completion_tokens - tokens_before) * cores / generate_cpu_s, 2
            ),
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
    if args.examples_out is not None:  # the trainer's own format: task_type, instruction, negatives
        from kalm_trainer.data.jsonl import write_examples

        write_examples(args.examples_out, result.examples)
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
    print(
        "examples/hour:",
        payload["examples_per_hour"],
        "(dedicated-machine estimate:",
        payload["est_examples_per_hour_dedicated"],
        ") | usage:",
        payload.get("usage"),
    )
    print("first-try rates (JSON shape, usable):", rates)


if __name__ == "__main__":
    main()
