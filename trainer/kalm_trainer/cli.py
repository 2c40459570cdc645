"""``kalm-train``: run a recipe, show it resolved, or list the shipped recipes and data steps.

    kalm-train run RECIPE [--from STEP] [--until STEP] [--restart] [key=value ...]
    kalm-train show RECIPE [key=value ...]
    kalm-train list

RECIPE is a TOML file or a shipped recipe name (kalm_v2, cpu_domain, tiny). Overrides use
dotted keys: ``stage.finetune.loss.gamma=0.5 data.pairs.inputs='["my_pairs.jsonl"]'``.
Multi-GPU / multi-node: launch the same command with ``torchrun`` or ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from kalm_rag.errors import KalmRagError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kalm-train", description="KaLM-Embedding training recipes")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a recipe (finished steps are skipped)")
    run.add_argument("recipe", help="recipe file or shipped recipe name")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields")
    run.add_argument("--from", dest="from_step", help="first step to run (earlier steps must be done)")
    run.add_argument("--until", dest="until_step", help="last step to run")
    run.add_argument(
        "--restart",
        action="store_true",
        help="delete the checkpoints of the stages that run and train them from scratch",
    )
    show = commands.add_parser("show", help="print the recipe with overrides applied, and its steps")
    show.add_argument("recipe")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    commands.add_parser("list", help="list shipped recipes and registered data steps")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow an option (run RECIPE --until X key=value): argparse
    # ends a positional list at the first option, so collect them here; anything else is an error
    if extra and getattr(args, "overrides", None) is not None and all(_is_override(e) for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # (importing kalm_rag above already set OMP_WAIT_POLICY=PASSIVE before torch loads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _dispatch(args)
    except KalmRagError as exc:
        print(f"kalm-train: error: {exc}", file=sys.stderr)
        return 2


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def _dispatch(args: argparse.Namespace) -> int:
    from kalm_trainer.recipe import builtin_recipes, load_recipe

    if args.command == "list":
        from kalm_trainer.data.steps import STEPS

        print("recipes:", ", ".join(builtin_recipes()))
        for name, step in STEPS.items():
            print(f"data step {name}: {step.summary}")
        return 0
    recipe = load_recipe(args.recipe, args.overrides)
    if args.command == "show":
        print(json.dumps(recipe.raw, indent=2, ensure_ascii=False))
        print("steps:", " -> ".join(recipe.step_names))
        print("output:", recipe.output_dir)
        return 0
    from kalm_trainer.pipeline import run_recipe

    result = run_recipe(recipe, from_step=args.from_step, until_step=args.until_step, restart=args.restart)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one summary is enough
        return 0
    for outcome in result.steps:
        print(f"{outcome.name}: {outcome.status}")
    if result.final_model is not None:
        print(f"final model: {result.final_model}")
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m kalm_trainer.cli`
    raise SystemExit(main())
