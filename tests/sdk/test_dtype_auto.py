"""dtype="auto" on whatever CPU runs the suite, and the switch that makes any CPU take the bf16
path (``KALM_RAG_CPU_BF16=1``), so the bf16 branch is tested on machines without bf16 too.

Every other test that compares numbers pins ``dtype="float32"``; run the suite with
``KALM_RAG_CPU_BF16=1`` to check that none of them depends on the auto choice.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from kalm_rag import ConfigError, Encoder
from kalm_rag.runtime import CPU_BF16_ENV, cpu_has_fast_bf16, pick_dtype

TEXTS = ["apt installs Debian packages", "a fast kernel module loader", "Python bindings for zlib"]


# the torch path: these tests are about the dtype it picks (exported CPU backends have their own)
TORCH = {"backend": "torch"} if "backend" in inspect.signature(Encoder.from_pretrained).parameters else {}


def test_auto_dtype_on_this_cpu_matches_float32_within_its_precision(tiny_bert_dir: Path) -> None:
    auto = Encoder.from_pretrained(tiny_bert_dir, device="cpu", **TORCH)  # whatever this CPU picks
    exact = Encoder.from_pretrained(tiny_bert_dir, device="cpu", dtype="float32", **TORCH)
    picked = next(auto.model.parameters()).dtype
    assert picked == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    a, b = auto.encode(TEXTS), exact.encode(TEXTS)
    assert a.dtype == np.float32 and a.shape == b.shape
    cosine = (a * b).sum(axis=1)  # both normalised
    if picked == torch.float32:
        np.testing.assert_allclose(a, b, atol=1e-6)
    else:
        assert cosine.min() > 0.99, cosine


@pytest.mark.parametrize(("value", "expected"), [("1", torch.bfloat16), ("0", torch.float32)])
def test_env_switch_forces_the_auto_choice(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: torch.dtype
) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, value)
    assert pick_dtype(None, torch.device("cpu")) == expected
    assert pick_dtype("auto", torch.device("cpu")) == expected
    assert pick_dtype("float32", torch.device("cpu")) == torch.float32  # explicit wins


def test_env_switch_rejects_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ConfigError, match=CPU_BF16_ENV):
        pick_dtype(None, torch.device("cpu"))


def test_forced_bf16_auto_path_runs_and_stays_close(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    bf16 = Encoder.from_pretrained(tiny_bert_dir, device="cpu", **TORCH)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    exact = Encoder.from_pretrained(tiny_bert_dir, device="cpu", dtype="float32", **TORCH)
    a, b = bf16.encode(TEXTS), exact.encode(TEXTS)
    assert a.dtype == np.float32
    assert (a * b).sum(axis=1).min() > 0.99
    assert np.abs(a - b).max() > 0  # really computed in bf16


def test_mteb_reload_keeps_the_dtype_it_was_built_with(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mteb")
    from kalm_rag.mteb_adapter import KalmMtebEncoder

    monkeypatch.setenv(CPU_BF16_ENV, "1")  # a bf16 CPU: a reload with dtype=auto would pick bf16
    model = KalmMtebEncoder.from_pretrained(str(tiny_bert_dir), dtype="float32", **TORCH)
    reloaded = model.mteb_model_meta.load_model()
    assert next(reloaded.encoder.model.parameters()).dtype == torch.float32
