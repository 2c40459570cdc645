"""KaLMEmbeddings: LangChain's standard embeddings suites, and the query instruction reaching the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import langchain_kalm
import numpy as np
import pytest
from langchain_kalm import KaLMEmbeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from kalm_rag.errors import InvalidInputError

RETRIEVAL = "Given a query, retrieve documents that answer the query"


def test_all_is_pinned() -> None:
    assert sorted(langchain_kalm.__all__) == ["KaLMEmbeddings", "KaLMVectorStore"]


class _TinyKaLMParams:
    """Loads the tiny KaLM-style model *by path* (through the shared cache), as users would."""

    _params: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(autouse=True)
    def _model_params(self, tiny_qwen2_dir: Path, kalm_config: Any) -> None:
        type(self)._params = {
            "model": str(tiny_qwen2_dir),
            "dtype": "float32",
            "model_kwargs": {"config": kalm_config},
        }

    @property
    def embeddings_class(self) -> type[KaLMEmbeddings]:
        return KaLMEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return dict(self._params)


class TestKaLMEmbeddingsStandardUnit(_TinyKaLMParams, EmbeddingsUnitTests):
    pass


class TestKaLMEmbeddingsStandardIntegration(_TinyKaLMParams, EmbeddingsIntegrationTests):
    pass


# -- the instruction reaches the model -------------------------------------------------------------


def test_query_gets_the_kalm_instruction_and_documents_stay_plain(tiny_kalm_encoder: Any) -> None:
    embeddings = KaLMEmbeddings(encoder=tiny_kalm_encoder)
    text = "how to install python"

    query = np.asarray(embeddings.embed_query(text))
    with_instruction = tiny_kalm_encoder.encode([f"Instruct: {RETRIEVAL} \n Query: {text}"])[0]
    plain = tiny_kalm_encoder.encode([text])[0]
    np.testing.assert_allclose(query, with_instruction, atol=1e-6)
    # what the stock adapters return for a query (plain encode) is a different vector
    assert not np.allclose(query, plain, atol=1e-3)

    document = np.asarray(embeddings.embed_documents([text])[0])
    np.testing.assert_allclose(document, plain, atol=1e-6)


def test_custom_instruction_and_symmetric_task(tiny_kalm_encoder: Any) -> None:
    text = "debian package search"
    custom = KaLMEmbeddings(encoder=tiny_kalm_encoder, instruction="Find the man page for a command")
    expected = tiny_kalm_encoder.encode([f"Instruct: Find the man page for a command \n Query: {text}"])[0]
    np.testing.assert_allclose(custom.embed_query(text), expected, atol=1e-6)

    # symmetric tasks (STS) put the instruction on both sides, as KaLM was trained
    sts = KaLMEmbeddings(encoder=tiny_kalm_encoder, task="sts")
    both = tiny_kalm_encoder.encode([f"Instruct: Retrieve semantically similar text \n Query: {text}"])[0]
    np.testing.assert_allclose(sts.embed_query(text), both, atol=1e-6)
    np.testing.assert_allclose(sts.embed_documents([text])[0], both, atol=1e-6)


async def test_async_variants_match_sync(tiny_kalm_encoder: Any) -> None:
    embeddings = KaLMEmbeddings(encoder=tiny_kalm_encoder)
    texts = ["linux kernel driver", "open source search library"]
    assert await embeddings.aembed_query(texts[0]) == embeddings.embed_query(texts[0])
    assert await embeddings.aembed_documents(texts) == embeddings.embed_documents(texts)


# -- fields ----------------------------------------------------------------------------------------


def test_returns_plain_python_floats_and_truncates(tiny_kalm_encoder: Any) -> None:
    embeddings = KaLMEmbeddings(encoder=tiny_kalm_encoder, truncate_dim=16)
    vectors = embeddings.embed_documents(["a small tool", "the network server"])
    assert all(type(x) is float for row in vectors for x in row)
    assert [len(row) for row in vectors] == [16, 16]
    assert embeddings.dim == 16
    expected = tiny_kalm_encoder.encode(["a small tool"], truncate_dim=16)[0]
    np.testing.assert_allclose(vectors[0], expected, atol=1e-6)
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert embeddings.embed_documents([]) == []


def test_same_model_is_loaded_once(tiny_qwen2_dir: Path, kalm_config: Any) -> None:
    options = {"model": str(tiny_qwen2_dir), "dtype": "float32", "model_kwargs": {"config": kalm_config}}
    first, second = KaLMEmbeddings(**options), KaLMEmbeddings(**options, instruction="Find code")
    assert first.client is second.client
    assert first.model_name == str(tiny_qwen2_dir)


def test_bad_settings_fail_at_construction(tiny_kalm_encoder: Any, default_encoder: Any) -> None:
    # pydantic reports validator errors as ValidationError, a ValueError like ConfigError
    with pytest.raises(ValueError, match="no instruction template"):
        KaLMEmbeddings(encoder=default_encoder, instruction="Find things")  # MiniLM has no template
    with pytest.raises(ValueError, match="unknown task type"):
        KaLMEmbeddings(encoder=tiny_kalm_encoder, task="translation-ish")
    with pytest.raises(ValueError, match="truncate_dim"):
        KaLMEmbeddings(encoder=tiny_kalm_encoder, truncate_dim=10_000)
    with pytest.raises(ValueError, match="only apply when loading"):
        KaLMEmbeddings(encoder=tiny_kalm_encoder, device="cpu")
    with pytest.raises(ValueError, match="own fields"):
        KaLMEmbeddings(encoder=tiny_kalm_encoder, encode_kwargs={"batch_size": 4})
    with pytest.raises(ValueError, match="batch_size"):
        KaLMEmbeddings(encoder=tiny_kalm_encoder, batch_size=0)
    with pytest.raises(InvalidInputError, match="empty"):
        KaLMEmbeddings(encoder=tiny_kalm_encoder).embed_documents(["fine", "  "])
