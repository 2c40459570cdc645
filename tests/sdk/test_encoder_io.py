"""Loading paths (folder, hub cache, registry), saving for sentence-transformers, bad input."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from kalm_rag import ConfigError, Encoder, InvalidInputError, ModelNotFoundError

TEXTS = ["the query is fast", "a small python library for search", "kernel driver"]


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_qwen2_dir"])
def test_saved_folder_loads_in_sentence_transformers_with_same_vectors(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    source: Path = request.getfixturevalue(fixture)
    encoder = Encoder.from_pretrained(source, dtype="float32", is_causal=False if "qwen" in fixture else None)
    saved = encoder.save_pretrained(tmp_path / "saved")
    st = SentenceTransformer(str(saved), device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)
    reloaded = Encoder.from_pretrained(saved, dtype="float32")
    assert reloaded.config == encoder.config.replace(max_length=encoder.max_length)
    np.testing.assert_allclose(reloaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-6)


def test_bidirectional_flag_persists_for_sentence_transformers(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    import json

    from sentence_transformers import SentenceTransformer

    from kalm_rag.registry import REGISTRY

    encoder = Encoder.from_pretrained(tiny_qwen2_dir, dtype="float32", config=REGISTRY["kalm-v2"].config)
    saved = encoder.save_pretrained(tmp_path / "kalm")
    assert json.loads((saved / "config.json").read_text())["is_causal"] is False
    st = SentenceTransformer(str(saved), device="cpu")
    np.testing.assert_allclose(
        st.encode(TEXTS, prompt_name="query"), encoder.encode_query(TEXTS), atol=1e-5
    )  # the saved "query" prompt is the KaLM retrieval instruction


def test_hub_id_loads_from_local_cache_with_registry_config(
    tiny_qwen2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub path for users with a network: a populated HF cache, read offline."""
    import huggingface_hub.constants as hf_constants

    repo = "HIT-TMG/KaLM-embedding-multilingual-mini-instruct-v2"
    cache = tmp_path / "hub"
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_qwen2_dir, repo_dir / "snapshots" / revision)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    encoder = Encoder.from_pretrained(repo, dtype="float32")
    assert encoder.name_or_path == "kalm-v2"
    assert encoder.config.is_causal is False and encoder.model.config.is_causal is False
    assert encoder.config.query_prefix().startswith("Instruct: ")
    assert encoder.encode_query(["kernel driver"]).shape == (1, 32)


def test_unknown_hub_model_offline_is_a_clear_error() -> None:
    with pytest.raises(ModelNotFoundError, match=r"could not load model 'nobody/no-such-model'"):
        Encoder.from_pretrained("nobody/no-such-model")


@pytest.mark.parametrize(
    "name, error",
    [("./does/not/exist", ModelNotFoundError), ("", ConfigError)],
)
def test_bad_model_names(name: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        Encoder.from_pretrained(name)


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        Encoder.from_pretrained(tmp_path)


def test_invalid_config_values_are_named() -> None:
    from kalm_rag import ModelConfig

    with pytest.raises(ConfigError, match="pooling"):
        ModelConfig(pooling="max")
    with pytest.raises(ConfigError, match="instruction"):
        ModelConfig(instruction_template="no placeholder")
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({"polling": "mean"})


@pytest.mark.parametrize(
    "texts, message",
    [
        (None, "None"),
        ([None], r"texts\[0\] is None"),
        (["ok", ""], r"texts\[1\] is empty"),
        (["   "], "whitespace"),
        ([1.5], "must be a string"),
        (42, "must be a string or a sequence"),
    ],
)
def test_bad_texts_get_clear_errors(tiny_bert_dir: Path, texts: object, message: str) -> None:
    encoder = Encoder.from_pretrained(tiny_bert_dir)
    with pytest.raises(InvalidInputError, match=message):
        encoder.encode(texts)  # type: ignore[arg-type]


def test_empty_list_and_bad_options(tiny_bert_dir: Path) -> None:
    encoder = Encoder.from_pretrained(tiny_bert_dir)
    assert encoder.encode([]).shape == (0, encoder.dim)
    assert encoder.encode([], truncate_dim=8).shape == (0, 8)
    with pytest.raises(InvalidInputError, match="truncate_dim"):
        encoder.encode(["kernel"], truncate_dim=10_000)
    with pytest.raises(InvalidInputError, match="batch_size"):
        encoder.encode(["kernel"], batch_size=0)
    with pytest.raises(InvalidInputError, match="instruction"):
        encoder.encode_query(["kernel"], instruction="   ")
    with pytest.raises(ConfigError, match="no instruction template"):
        encoder.encode_query(["kernel"], instruction="Find packages")
    with pytest.raises(ConfigError, match="unknown task"):
        encoder.encode_query(["kernel"], task="summarise-this")
    with pytest.raises(InvalidInputError, match="dimension mismatch"):
        encoder.similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(InvalidInputError, match="NaN"):
        encoder.similarity(np.full((1, 3), np.nan), np.ones((1, 3)))


def test_long_texts_are_truncated_with_one_warning(tiny_bert_dir: Path) -> None:
    encoder = Encoder.from_pretrained(tiny_bert_dir)  # max_position_embeddings=64
    long_text = " ".join(["search"] * 500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = encoder.encode([long_text])
        encoder.encode([long_text])
    assert sum("truncated" in str(w.message) for w in caught) == 1
    prefix_only = encoder.encode([" ".join(["search"] * (encoder.max_length - 2))])
    np.testing.assert_allclose(first, prefix_only, atol=1e-6)
