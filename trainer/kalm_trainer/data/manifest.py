"""Step manifests: what a pipeline step read, with which config, and what it wrote.

Every step writes its outputs plus ``manifest.json`` into its output folder, atomically (the
folder appears complete or not at all). A later run with the same step, config, input
contents (sha256) and trainer version finds a matching manifest with intact outputs and skips
the work: that is how a recipe resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalm_rag._atomic import atomic_folder
from kalm_rag.errors import InvalidInputError
from kalm_trainer import __version__
from kalm_trainer.data.files import sha256_file

__all__ = ["MANIFEST_NAME", "Manifest", "StepBody", "load_manifest", "run_with_manifest"]

MANIFEST_NAME = "manifest.json"
_FORMAT = 1

#: A step's work: (config, input paths, folder to write into) -> JSON-ready stats.
StepBody = Callable[[Any, list[Path], Path], Mapping[str, Any]]


@dataclass(frozen=True)
class Manifest:
    step: str
    config: dict[str, Any]
    inputs: list[dict[str, str]]  # [{"path": ..., "sha256": ...}] in the order given
    outputs: dict[str, str]  # file name (relative to the folder) -> sha256
    stats: dict[str, Any]
    trainer_version: str
    seconds: float
    output_dir: Path = field(compare=False)
    skipped: bool = field(default=False, compare=False)  # True: this call found it done

    def output_path(self, name: str = "examples.jsonl") -> Path:
        if name not in self.outputs:
            raise InvalidInputError(f"step {self.step!r} wrote no {name!r}; it wrote {sorted(self.outputs)}")
        return self.output_dir / name

    @property
    def output_paths(self) -> list[Path]:
        return [self.output_dir / name for name in sorted(self.outputs)]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "step": self.step,
            "config": self.config,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "stats": self.stats,
            "trainer_version": self.trainer_version,
            "seconds": self.seconds,
        }


def load_manifest(output_dir: str | os.PathLike[str]) -> Manifest | None:
    """The manifest in ``output_dir``, or None if there is none (or it is unreadable)."""
    folder = Path(output_dir)
    try:
        raw = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        return Manifest(
            step=raw["step"],
            config=raw["config"],
            inputs=raw["inputs"],
            outputs=raw["outputs"],
            stats=raw["stats"],
            trainer_version=raw["trainer_version"],
            seconds=raw["seconds"],
            output_dir=folder,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _hash_inputs(inputs: Sequence[Path]) -> list[dict[str, str]]:
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise InvalidInputError(f"step input file(s) not found: {missing}")
    return [{"path": str(p), "sha256": sha256_file(p)} for p in inputs]


def _is_done(found: Manifest | None, step: str, config: dict[str, Any], inputs: list[dict[str, str]]) -> bool:
    if found is None or found.step != step or found.config != config or found.trainer_version != __version__:
        return False
    # input paths may move; only their contents matter
    if [i["sha256"] for i in found.inputs] != [i["sha256"] for i in inputs]:
        return False
    for name, digest in found.outputs.items():
        path = found.output_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            return False
    return True


def run_with_manifest(
    step: str,
    body: StepBody,
    config: Any,
    config_dict: dict[str, Any],
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    force: bool = False,
) -> Manifest:
    """Run ``body`` unless ``output_dir`` already holds a matching manifest (``force`` reruns)."""
    folder = Path(output_dir)
    input_paths = [Path(p) for p in inputs]
    hashed = _hash_inputs(input_paths)
    # a config must survive the JSON round trip to compare equal with a stored one
    config_json = json.loads(json.dumps(config_dict))
    found = load_manifest(folder)
    if not force and _is_done(found, step, config_json, hashed):
        assert found is not None
        return dataclasses.replace(found, skipped=True)
    started = time.perf_counter()
    with atomic_folder(folder) as tmp:
        stats = json.loads(json.dumps(dict(body(config, input_paths, tmp))))
        outputs = {
            str(path.relative_to(tmp)): sha256_file(path)
            for path in sorted(tmp.rglob("*"))
            if path.is_file() and path.name != MANIFEST_NAME
        }
        manifest = Manifest(
            step=step,
            config=config_json,
            inputs=hashed,
            outputs=outputs,
            stats=stats,
            trainer_version=__version__,
            seconds=round(time.perf_counter() - started, 3),
            output_dir=folder,
        )
        (tmp / MANIFEST_NAME).write_text(
            json.dumps(manifest.to_json(), indent=2, ensure_ascii=False), encoding="utf-8"
        )
    return manifest
