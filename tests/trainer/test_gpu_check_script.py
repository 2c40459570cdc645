"""The Python parts of benchmarks/gpu_check.sh run on CPU with tiny models (``--tiny``), so the
prepared GPU check is known to work before a GPU is lent: throughput accounting, and a short
bidirectional KaLM fine-tune whose saved model loads in kalm_rag and sentence-transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def run(what: str, tmp_path: Path) -> dict[str, object]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'trainer'}"}  # fmt: skip
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), what, "--tiny"]
    command += ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads((tmp_path / "out" / f"gpu_check_{what}_tiny.json").read_text())
    return result


def test_throughput_dry_run(tmp_path: Path) -> None:
    result = run("throughput", tmp_path)
    assert result["tokens"] == 64 * 64 and float(result["tokens_per_s"]) > 0  # type: ignore[arg-type]


def test_finetune_dry_run(tmp_path: Path) -> None:
    result = run("finetune", tmp_path)
    assert result["ok"] is True and result["encoder_is_causal"] is False
    assert float(result["loss_last_third"]) < float(result["loss_first_third"])  # type: ignore[arg-type]
    assert float(result["kalm_rag_vs_sentence_transformers_cosine"]) > 0.999  # type: ignore[arg-type]
