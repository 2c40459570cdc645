"""Data steps and teacher scoring under a multi-process launch, without collective timeouts.

- Steps that encode (``filter_ranking``, ``mine_negatives``, teacher scoring) run on EVERY
  process inside :func:`~kalm_trainer.data.sharded.sharded_encoding`: each process embeds
  1/world of the texts, the embeddings are all-gathered, every process computes the same
  result; the main process writes the step folder and manifest, the others write into a
  scratch folder that is removed at once.
- Other steps (conversion, labelling, synthesis) run on the main process; the others wait for
  its manifest by polling the file system, not in a barrier that times out after 30 minutes.

Whether a step is already done is decided by every process from the same manifest before any
of them starts, so all of them either skip it or run it together.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kalm_trainer import __version__
from kalm_trainer.data.files import sha256_file
from kalm_trainer.data.manifest import Manifest, load_manifest, run_with_manifest
from kalm_trainer.waiting import failure_marker, wait_until

__all__ = ["SHARDED_STEPS", "run_data_step", "run_shared", "score_with_teacher"]

#: data steps whose encoding is split across processes
SHARDED_STEPS = frozenset({"filter_ranking", "mine_negatives"})

Runner = Callable[[Path, bool], Manifest]  # (folder to write, force) -> manifest


def _matches(found: Manifest | None, step: str, config: dict[str, Any], input_hashes: list[str]) -> bool:
    """The manifest is this step's, for these inputs (outputs were verified by their writer)."""
    return (
        found is not None
        and found.step == step
        and found.config == config
        and found.trainer_version == __version__
        and [i["sha256"] for i in found.inputs] == input_hashes
    )


def run_shared(
    state: Any,
    folder: Path,
    *,
    step: str,
    config: dict[str, Any],
    inputs: Sequence[Path],
    run: Runner,
    sharded: bool,
) -> Manifest:
    """Run a manifest-writing step once for all processes (see the module docstring)."""
    if state.num_processes <= 1:
        return run(folder, False)
    from kalm_trainer.data.sharded import sharded_encoding

    wanted = json.loads(json.dumps(config))
    hashes = [sha256_file(p) for p in inputs]
    done = _matches(load_manifest(folder), step, wanted, hashes)
    failed = failure_marker(folder)
    if state.is_main_process:
        try:
            if sharded and not done:
                with sharded_encoding():
                    manifest = run(folder, False)
            else:
                manifest = run(folder, False)
        except Exception as exc:
            failed.write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
            raise
        failed.unlink(missing_ok=True)
        return manifest
    if sharded and not done:  # join the main process's collectives; discard the copy
        scratch = folder.with_name(f".{folder.name}.rank{state.process_index}")
        try:
            with sharded_encoding():
                run(scratch, True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    wait_until(
        lambda: _matches(load_manifest(folder), step, wanted, hashes),
        f"the main process's output of step {step!r} in {folder}",
        failed=failed,
    )
    written = load_manifest(folder)
    assert written is not None
    return dataclasses.replace(written, skipped=done)


def run_data_step(state: Any, name: str, config: Any, inputs: Sequence[Path], folder: Path) -> Manifest:
    """A registered data step (``data.steps``) run for all processes of the launch."""
    from kalm_trainer.data.steps import parse_step_config, run_step

    parsed = parse_step_config(name, config)
    return run_shared(
        state,
        folder,
        step=name,
        config=parsed.to_dict(),
        inputs=inputs,
        run=lambda target, force: run_step(name, parsed, inputs, target, force=force),
        sharded=name in SHARDED_STEPS,
    )


def _teacher_body(teacher: str, inputs: list[Path], tmp: Path) -> dict[str, Any]:
    from kalm_trainer.data.embedding import load_encoder
    from kalm_trainer.data.jsonl import read_examples, write_examples
    from kalm_trainer.teacher import add_teacher_scores

    report = read_examples(inputs)
    scored = add_teacher_scores(report.examples, load_encoder(teacher))
    write_examples(tmp / "examples.jsonl", scored)
    return {
        "teacher": teacher,
        "examples": len(scored),
        **{f"input_{k}": v for k, v in report.counts.items()},
    }


def score_with_teacher(state: Any, teacher: str, inputs: Sequence[Path], folder: Path) -> Manifest:
    """Teacher scores for ``inputs``, computed once (sharded across processes) and cached in
    ``folder`` with a manifest: a restart, or another stage with the same teacher and data,
    reuses them."""
    config = {"teacher": teacher}
    return run_shared(
        state,
        folder,
        step="teacher_scores",
        config=config,
        inputs=inputs,
        run=lambda target, force: run_with_manifest(
            "teacher_scores", _teacher_body, teacher, config, inputs, target, force=force
        ),
        sharded=True,
    )
