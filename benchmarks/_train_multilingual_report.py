"""Rendering of the multilingual fine-tuning benchmark: Markdown tables and plots.

Split from bench_train_multilingual.py (which runs the recipe and the evaluations) so that each
file has one job; the constants here name the tasks, targets and rows both files use.
"""

from __future__ import annotations

import statistics
from typing import Any

import _common

TASKS = ("DebianDescRetrieval", "ManPageRetrieval", "GettextBitextMining", "LeeSTS")
EVAL_MAX_LENGTH = 256  # as the dev baselines in shared/data/dev/README.md

#: the issue's targets on the dev sets: (summary key, label, e5 value quoted by the issue, target)
TARGETS = (
    ("debian_en", "DebianDesc en nDCG@10", 0.932, None),
    ("debian_non_en", "DebianDesc non-en mean nDCG@10", 0.733, 0.83),
    ("manpage_en", "ManPage en nDCG@10", 0.905, None),
    ("manpage_non_en", "ManPage non-en mean nDCG@10", 0.655, 0.72),
    ("gettext", "Gettext bitext accuracy (12 pairs)", 0.933, 0.94),
    ("lee", "Lee STS Spearman", 0.432, 0.50),
)
SUMMARY_KEYS = tuple(t[0] for t in TARGETS)

AFTER = "multilingual (after, soup)"
LAST = "multilingual, last checkpoint (no soup)"
CHECKPOINT_SOUP = "multilingual, uniform soup of the checkpoints only (no base)"
MAIN_MODELS = ("e5 (before)", AFTER, CHECKPOINT_SOUP, LAST)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


ABLATION_VARIANTS = (
    "reference (all on)",
    "no soup (last checkpoint)",
    "no multi-task mix (Debian pairs only)",
    "no hard negatives (in-batch only)",
    "no task batching (random batches)",
    "no focal (gamma 0)",
    "no hard-negative mixing",
    "no filtering",
)


def incomplete_note(rows: dict[str, dict[str, list[float]]], seeds: list[int]) -> list[str]:
    """Say which variants have fewer seeds than asked for (a run cut short by its time budget)."""
    short = [f"{v} ({len(rows.get(v, {}).get('lee', []))}/{len(seeds)} seeds)" for v in ABLATION_VARIANTS
             if len(rows.get(v, {}).get("lee", [])) < len(seeds)]  # fmt: skip
    return [f"**Not finished in this run:** {', '.join(short)}.", ""] if short else []


def data_lines(counts: dict[str, Any]) -> list[str]:
    """One line per data step: lines in, lines out, and where the rest went."""
    lines = []
    for name, stats in counts.items():
        text = f"- `{name}`: {stats.get('read', '?')} read, {stats.get('written', '?')} written"
        if "sampled_per_group" in stats:
            groups = ", ".join(f"{k} {v}" for k, v in stats["sampled_per_group"].items())
            text += f"; sampled per language: {groups}"
        if "dropped_per_task" in stats:
            dropped = {}
            for task, n in stats["dropped_per_task"].items():
                key = task.split("-bitext")[0] + ("-bitext" if "-bitext" in task else "")
                dropped[key] = dropped.get(key, 0) + n
            text += f"; dropped {stats.get('dropped')}: " + ", ".join(f"{k} {v}" for k, v in dropped.items())
        if "mined" in stats:
            text += f"; {stats['mined']} negatives mined, {stats.get('duplicated', 0)} duplicated to fill"
        lines.append(text)
    return lines


def ablation_rows(data: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """variant -> summary key -> one value per seed (in seed order)."""
    rows: dict[str, dict[str, list[float]]] = {}
    for key, result in data["evals"].items():
        if not key.startswith("ablation s"):
            continue
        variant = key.split(" ", 2)[2]
        for metric, value in result["summary"].items():
            rows.setdefault(variant, {}).setdefault(metric, []).append(value)
    return rows


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return fmt(values[0]) if values else "-"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def markdown(data: dict[str, Any]) -> str:
    evals = data["evals"]
    lines = ["# Multilingual multi-task fine-tuning on CPU (`multilingual` recipe)", ""]
    main = data.get("main", {})
    config = data.get("config", {})
    if main:
        counts = main["data"]
        lines += [
            "Recipe `multilingual` (`kalm-train run multilingual`) from multilingual-e5-small on seeded "
            "subsamples of the three files in shared/data/train; dev tasks of shared/data/dev at max length "
            f"{EVAL_MAX_LENGTH}, exact search. Wall time of the recipe: {main['wall_seconds'] / 60:.1f} min "
            f"on {data.get('machine', {}).get('cores_available', '?')} cores (their load: see Machine).",
            "",
            "Data steps (counts from the manifests):",
            "",
            *data_lines(counts),
            "",
        ]
    before, after = evals.get("e5 (before)"), evals.get(AFTER)
    last, checkpoints = evals.get(LAST), evals.get(CHECKPOINT_SOUP)
    if before:
        head = (
            "| group | e5 (before) | after (recipe's soup) | target | met "
            "| soup of checkpoints only | last checkpoint |"
        )
        lines += ["## Targets (dev)", "", head, "|---|---|---|---|---|---|---|"]
        for key, label, _quoted, target in TARGETS:
            b = before["summary"][key]
            a = after["summary"][key] if after else None
            c = last["summary"][key] if last else None
            k = checkpoints["summary"][key] if checkpoints else None
            goal = max(b, target) if target is not None else b
            met = "-" if a is None else ("yes" if a >= goal - 1e-9 else "**no**")
            lines.append(f"| {label} | {fmt(b)} | {fmt(a)} | >= {goal:.3f} | {met} | {fmt(k)} | {fmt(c)} |")
        lines += [
            "",
            "Target = the issue's number, or e5's own value where the issue asks for at least e5's. The "
            "recipe's soup averages the base model (weight 1/3) with the 5 checkpoints (2/15 each); the "
            "last two columns are the same run without the base model in the soup, and without a soup.",
            "",
            "The recipe's settings were chosen on these dev sets: three configurations were tried (the "
            "`v1` and `v2 try` rows below, then the shipped one), and the soup's base-model weight was "
            "picked among 0, 1/3 and 1/2 on v1. The dev numbers are therefore somewhat optimistic; the "
            "hidden test set is the fair check. Each configuration is one run (seed 0).",
            "",
        ]
        if after:
            below = [
                f"{task} {lang} ({fmt(after['scores'][task][lang])} < {fmt(value)})"
                for task in TASKS
                for lang, value in before["scores"][task].items()
                if after["scores"][task].get(lang, 1.0) < value
            ]
            lines += [f"Languages where the soup is below e5: {', '.join(below) or 'none'}.", ""]
        lines += []
        for task in TASKS:
            langs = list(before["scores"][task])
            lines += [f"### {task}", "", f"![{task}](train_multilingual_{task}.png)", "",
                      "| model | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]  # fmt: skip
            extra = [n for n in evals if n.startswith("multilingual") and n not in MAIN_MODELS]
            for name in [*MAIN_MODELS, *extra]:
                if name in evals:
                    row = evals[name]["scores"][task]
                    lines.append(f"| {name} | " + " | ".join(fmt(row.get(lang)) for lang in langs) + " |")
            lines.append("")
    rows = ablation_rows(data)
    if rows:
        ab = data["ablation_config"]
        ref = rows.get("reference (all on)", {})
        base = evals.get(f"e5 (before) @{ab['eval_max_length']}")
        lines += [
            f"## Ablation ({ab['steps']} steps per run, seeds {ab['seeds']}, eval at max length "
            f"{ab['eval_max_length']} tokens, LeeSTS {EVAL_MAX_LENGTH}; mean ± std over seeds)",
            "",
            "Shorter runs than the recipe's and a shorter eval length (the training length of passages), "
            "to fit the whole grid in the time budget on 2 shared cores: compare rows with each other, "
            "not with the main table. The grid ran on v1 of the recipe (its data steps and stage "
            "settings: 120 Debian pairs per language, 6 frozen layers, lr 3e-5), before the shipped "
            "settings were chosen; every run trains from v1's data steps (same sample, filtering and "
            "mining); the seed changes batch order, negative choice and mixing. Soups "
            "here are uniform over the run's 3 checkpoints (no base model); `no soup` is the last "
            "checkpoint of the reference runs. Δ = variant - reference, paired by seed (mean ± std).",
            "",
            *incomplete_note(rows, ab["seeds"]),
            "![ablation](train_multilingual_ablation.png)",
            "",
            "| variant | " + " | ".join(k for k in SUMMARY_KEYS) + " |",
            "|---|" + "---|" * len(SUMMARY_KEYS),
        ]
        if base:
            lines.append(
                "| e5 (before) | " + " | ".join(fmt(base["summary"][k]) for k in SUMMARY_KEYS) + " |"
            )
        for variant, metrics in rows.items():
            lines.append(
                f"| {variant} | " + " | ".join(mean_std(metrics.get(k, [])) for k in SUMMARY_KEYS) + " |"
            )
        lines += [
            "",
            "| Δ vs reference | " + " | ".join(SUMMARY_KEYS) + " |",
            "|---|" + "---|" * len(SUMMARY_KEYS),
        ]
        for variant, metrics in rows.items():
            if variant == "reference (all on)":
                continue
            cells = []
            for k in SUMMARY_KEYS:
                pairs = list(zip(metrics.get(k, []), ref.get(k, []), strict=False))
                cells.append(mean_std([a - b for a, b in pairs]) if pairs else "-")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    if data.get("timings_s"):
        lines += ["## Timings (wall seconds)", "", "| what | s |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in data["timings_s"].items()]
        lines.append("")
    if data.get("machine"):
        lines += ["## Machine", "", _common.machine_summary(data["machine"]), ""]
    if config:
        lines += [f"Command: `{data['machine'].get('command', '')}`", ""]
    return "\n".join(lines)


def plots(data: dict[str, Any]) -> None:
    plt = _common.pyplot()
    evals = data["evals"]
    names = [n for n in MAIN_MODELS if n in evals]
    for task in TASKS if names else ():
        langs = list(evals[names[0]]["scores"][task])
        fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(langs) + 2), 3.6))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(langs))]
            ax.bar(xs, [evals[name]["scores"][task].get(lang, 0.0) for lang in langs], width, label=name)
        ax.set_xticks(range(len(langs)), langs, rotation=45 if len(langs) > 6 else 0)
        low = min(min(evals[n]["scores"][task].values()) for n in names)
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.set_title(f"{task} (dev), before / after")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
        _common.save_figure(fig, _common.RESULTS_DIR / f"train_multilingual_{task}.png")
        plt.close(fig)
    rows = ablation_rows(data)
    ref = rows.get("reference (all on)")
    if rows and ref:
        variants = [v for v in rows if v != "reference (all on)"]
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(SUMMARY_KEYS)
        for i, key in enumerate(SUMMARY_KEYS):
            means, stds = [], []
            for variant in variants:
                deltas = [a - b for a, b in zip(rows[variant].get(key, []), ref.get(key, []), strict=False)]
                means.append(statistics.fmean(deltas) if deltas else 0.0)
                stds.append(statistics.stdev(deltas) if len(deltas) > 1 else 0.0)
            xs = [j + (i - (len(SUMMARY_KEYS) - 1) / 2) * width for j in range(len(variants))]
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=key)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(variants)), [v.split(" (")[0] for v in variants], rotation=30, ha="right")
        ax.set_ylabel("variant - reference")
        ax.set_title("Ablation: effect of turning each technique off (mean ± std over seeds)")
        ax.legend(fontsize=7, ncol=3)
        ax.grid(axis="y", alpha=0.3)
        _common.save_figure(fig, _common.RESULTS_DIR / "train_multilingual_ablation.png")
        plt.close(fig)
