"""Exported backends (OpenVINO, ONNX Runtime): same vectors as torch, cache, guard, layouts.

Mechanics run on the tiny BERT with a small set of the user's own calibration texts (fast);
agreement on the packaged MiniLM and the bundled calibration sample is marked slow.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import WORDS

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

TEXTS = ["the fast search index", "a small linux kernel driver for the network", "python data model"]
# the user's own texts: half calibrate, half are held out for the guard
OWN = [" ".join(WORDS[i : i + 3 + i % 7]) for i in range(0, 48)]


@pytest.fixture(autouse=True, scope="module")
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One export cache for this module: later tests reuse the exports of earlier ones."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KALM_RAG_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("KALM_RAG_BACKEND", raising=False)
        yield


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_exported_float32_matches_torch_and_is_cached(tiny_bert_dir: Path, backend: str) -> None:
    from kalm_rag import Encoder

    torch_enc = Encoder.from_pretrained(str(tiny_bert_dir), backend="torch", dtype="float32")
    enc = Encoder.from_pretrained(str(tiny_bert_dir), backend=backend, dtype="float32", calibration_texts=OWN)
    assert enc.backend == f"{backend} float32"
    choice = enc.backend_choice
    assert choice.guard is not None and choice.guard.passed and choice.guard.top10_agreement == 1.0
    # same output contract: prompts, pooling, normalisation and Matryoshka truncation
    for kwargs in ({}, {"truncate_dim": 16}, {"normalize": False}):
        ours, ref = enc.encode(TEXTS, **kwargs), torch_enc.encode(TEXTS, **kwargs)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(enc.encode_query(TEXTS), torch_enc.encode_query(TEXTS), atol=1e-5)
    # the export and the guard's verdict are saved together and reused by the next load
    manifest = json.loads((choice.export / "export.json").read_text())
    guard = json.loads((choice.export / "guard.json").read_text())
    assert manifest["backend"] == backend and manifest["source_hash"] in str(choice.export)
    assert [v["passed"] for v in guard.values()] == [True]
    stamp = (choice.export / "export.json").stat().st_mtime_ns
    again = Encoder.from_pretrained(
        str(tiny_bert_dir), backend=backend, dtype="float32", calibration_texts=OWN
    )
    assert again.backend_choice.export == choice.export
    assert (choice.export / "export.json").stat().st_mtime_ns == stamp


def test_guard_refuses_what_misses_the_tolerance(tiny_bert_dir: Path) -> None:
    """A tolerance nothing can meet: int8 and the float32 fallback are refused, torch runs."""
    import torch

    from kalm_rag import Encoder
    from kalm_rag.backends.guard import GuardPolicy

    impossible = GuardPolicy(min_agreement=1.0, min_cosine=1.01)
    with pytest.warns(UserWarning, match="int8 refused by the accuracy guard"):
        enc = Encoder.from_pretrained(
            str(tiny_bert_dir), backend="onnx", dtype="int8", calibration_texts=OWN, guard=impossible
        )
    assert enc.backend == "torch" and enc.runner is None
    refused = enc.backend_choice.refused
    # on a CPU with fast bf16 the torch fallback's bf16 is refused too ("torch bfloat16"): float32
    assert [r.split(":")[0] for r in refused][:2] == ["onnx int8", "onnx float32"]
    assert enc.model.dtype == torch.float32
    int8_folder = next(p for p in _exports() if "int8" in p.name)
    verdicts = json.loads((int8_folder / "guard.json").read_text())
    assert [v["passed"] for v in verdicts.values()] == [False]
    ref = Encoder.from_pretrained(str(tiny_bert_dir), backend="torch", dtype="float32")
    np.testing.assert_allclose(enc.encode(TEXTS), ref.encode(TEXTS), atol=1e-6)
    # the saved metrics are judged again under the thresholds in force: default ones pass float32
    relaxed = Encoder.from_pretrained(
        str(tiny_bert_dir), backend="onnx", dtype="float32", calibration_texts=OWN
    )
    assert relaxed.backend == "onnx float32"


def test_auto_keeps_torch_when_the_option_is_not_faster_here(tiny_bert_dir: Path) -> None:
    """auto times the passing option against torch once per CPU, caches it, and keeps torch
    when the option misses ``min_speedup``; explicit dtypes and ``min_speedup=0`` never time."""
    from kalm_rag import ConfigError, Encoder
    from kalm_rag.backends.guard import GuardPolicy

    untimed = Encoder.from_pretrained(
        str(tiny_bert_dir), calibration_texts=OWN, guard=GuardPolicy(min_speedup=0)
    )
    assert untimed.backend != "torch"
    export = untimed.backend_choice.export
    assert not (export / "speed.json").exists()

    never_enough = GuardPolicy(min_speedup=1000)
    enc = Encoder.from_pretrained(str(tiny_bert_dir), calibration_texts=OWN, guard=never_enough)
    assert enc.backend == "torch" and enc.runner is None
    assert "torch is the fastest passing option on this CPU" in enc.backend_choice.reason
    assert enc.backend_choice.refused[-1].startswith(f"{untimed.backend}: slower here")
    timings = json.loads((export / "speed.json").read_text())
    [(key, timing)] = timings.items()
    assert key.startswith(untimed.backend.split()[1]) and timing["n_documents"] == len(OWN) // 2
    assert timing["option_seconds"] > 0 and timing["torch_seconds"] > 0
    # the guarded torch dtype: bf16 only on a bf16 CPU where bf16 passes the guard
    ref = Encoder.from_pretrained(str(tiny_bert_dir), backend="torch", dtype=enc.backend_choice.precision)
    np.testing.assert_allclose(enc.encode(TEXTS), ref.encode(TEXTS), atol=1e-6)

    # the second load reads the measurement instead of timing again
    stamp = (export / "speed.json").stat().st_mtime_ns
    again = Encoder.from_pretrained(str(tiny_bert_dir), calibration_texts=OWN, guard=never_enough)
    assert again.backend == "torch" and (export / "speed.json").stat().st_mtime_ns == stamp
    # the same measurement judged under a threshold it meets picks the option, with its timing
    met = GuardPolicy(min_speedup=timing["torch_seconds"] / timing["option_seconds"])
    chosen = Encoder.from_pretrained(str(tiny_bert_dir), calibration_texts=OWN, guard=met)
    assert chosen.backend == untimed.backend and "x torch" in chosen.backend_choice.reason
    with pytest.raises(ConfigError, match="min_speedup"):
        GuardPolicy(min_speedup=-1)


def _exports() -> list[Path]:
    import os

    root = Path(os.environ["KALM_RAG_CACHE"]) / "exports"
    return [variant for model in root.iterdir() for variant in model.iterdir() if variant.is_dir()]


def test_auto_falls_back_to_torch_without_openvino(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kalm_rag import Encoder
    from kalm_rag.errors import MissingDependencyError

    for module in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    enc = Encoder.from_pretrained(str(tiny_bert_dir), dtype="float32")
    assert enc.backend == "torch" and "not installed" in enc.backend_choice.reason
    assert enc.encode(TEXTS).shape == (3, 32)
    with pytest.raises(MissingDependencyError, match=r"kalm-rag\[openvino\]"):
        Encoder.from_pretrained(str(tiny_bert_dir), backend="openvino")


def test_auto_guards_its_torch_bf16_path(tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with fast bf16, auto's torch path is bf16 only when bf16 passes the same guard as
    the exports (verdict cached); else float32. An explicit dtype is never second-guessed."""
    import torch

    from kalm_rag import Encoder
    from kalm_rag.backends.guard import GuardPolicy

    monkeypatch.setenv("KALM_RAG_CPU_BF16", "1")  # as on AMX / AVX512-bf16 CPUs
    for module in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # torch is the only path: no exports
    impossible = GuardPolicy(min_agreement=1.0, min_cosine=1.01)
    enc = Encoder.from_pretrained(str(tiny_bert_dir), calibration_texts=OWN, guard=impossible)
    assert enc.backend == "torch" and enc.model.dtype == torch.float32
    choice = enc.backend_choice
    assert choice.precision == "float32" and choice.refused[0].startswith("torch bfloat16: top-10 agreement")
    assert "refused before it: torch bfloat16" in choice.reason
    [folder] = [p for p in _exports() if p.name == "torch-bfloat16"]
    [verdict] = json.loads((folder / "guard.json").read_text()).values()
    assert verdict["passed"] is False and verdict["min_cosine"] > 0.99  # bf16 is close, not exact
    ref = Encoder.from_pretrained(str(tiny_bert_dir), backend="torch", dtype="float32")
    np.testing.assert_allclose(enc.encode(TEXTS), ref.encode(TEXTS), atol=1e-6)

    # the cached metrics judged under thresholds bf16 meets: bf16, with no refusal
    stamp = (folder / "guard.json").stat().st_mtime_ns
    lenient = GuardPolicy(min_agreement=0.5, min_cosine=0.9)
    fast = Encoder.from_pretrained(str(tiny_bert_dir), calibration_texts=OWN, guard=lenient)
    assert fast.model.dtype == torch.bfloat16 and fast.backend_choice.refused == []
    assert (folder / "guard.json").stat().st_mtime_ns == stamp
    asked = Encoder.from_pretrained(str(tiny_bert_dir), dtype="bfloat16", guard=impossible)
    assert asked.model.dtype == torch.bfloat16


def test_save_pretrained_writes_sentence_transformers_backend_folders(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort
    import openvino as ov

    from kalm_rag import Encoder

    ids = np.array([[2, 30, 31, 32, 3], [2, 33, 3, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    reference = Encoder.from_pretrained(str(tiny_bert_dir), backend="torch", dtype="float32")
    expected = reference.model(input_ids=_t(ids), attention_mask=_t(mask)).last_hidden_state.detach().numpy()
    for backend, file in (("openvino", "openvino/openvino_model.xml"), ("onnx", "onnx/model.onnx")):
        enc = Encoder.from_pretrained(
            str(tiny_bert_dir), backend=backend, dtype="float32", calibration_texts=OWN
        )
        saved = enc.save_pretrained(tmp_path / backend)
        assert (saved / file).is_file() and (saved / "model.safetensors").is_file()
        if backend == "openvino":
            # pinned f32: OpenVINO runs bf16 by itself on AMX / AVX512-bf16 CPUs
            f32 = {"INFERENCE_PRECISION_HINT": "f32"}
            out = ov.Core().compile_model(str(saved / file), "CPU", f32)(
                {"input_ids": ids, "attention_mask": mask}
            )
            hidden = out["last_hidden_state"]
        else:
            hidden = ort.InferenceSession(str(saved / file)).run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask}
            )[0]
        keep = mask.astype(bool)  # padded positions are never pooled
        np.testing.assert_allclose(hidden[keep], expected[keep], atol=1e-4)
        # and kalm_rag loads the saved folder back with the same vectors
        back = Encoder.from_pretrained(str(saved), backend="torch", dtype="float32")
        np.testing.assert_allclose(back.encode(TEXTS), enc.encode(TEXTS), atol=1e-5)


def test_bad_backend_arguments(tiny_bert_dir: Path) -> None:
    from kalm_rag import ConfigError, Encoder

    with pytest.raises(ConfigError, match="unknown backend"):
        Encoder.from_pretrained(str(tiny_bert_dir), backend="tensorrt")
    with pytest.raises(ConfigError, match="int8"):
        Encoder.from_pretrained(str(tiny_bert_dir), backend="torch", dtype="int8")
    with pytest.raises(ConfigError, match="bf16"):
        Encoder.from_pretrained(str(tiny_bert_dir), backend="onnx", dtype="bfloat16")


@pytest.mark.slow
def test_minilm_exports_agree_with_float32_on_real_texts(
    dev_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packaged MiniLM, bundled calibration sample: what auto and int8 pick keeps top-10 >= 0.99."""
    monkeypatch.delenv("KALM_RAG_CACHE")  # the user cache: this export is reused across runs
    from kalm_rag import Encoder
    from kalm_rag.backends.guard import GuardPolicy, compare, user_texts

    rows = [json.loads(line) for line in (dev_data / "DebianDescRetrieval" / "corpus.jsonl").open()]
    docs = [r["text"] for r in rows[:200]]
    queries = [
        json.loads(line)["text"] for line in (dev_data / "DebianDescRetrieval" / "queries.jsonl").open()
    ]
    queries = queries[:100]
    ref = Encoder.from_pretrained(backend="torch", dtype="float32")
    ref_vectors = (ref.encode_query(queries), ref.encode_document(docs))
    for dtype in (None, "int8"):
        # agreement, not speed: auto may keep torch where it is faster (an AVX2-only CPU)
        enc = Encoder.from_pretrained(dtype=dtype, guard=GuardPolicy(min_speedup=0))
        assert enc.backend != "torch"
        result = compare(
            ref_vectors, (enc.encode_query(queries), enc.encode_document(docs)),
            texts=user_texts(docs[:22]), policy=GuardPolicy(),
        )  # fmt: skip
        assert result.passed, (enc.backend, result.reason())


def _t(array: np.ndarray):  # type: ignore[no-untyped-def]
    import torch

    return torch.from_numpy(array)
