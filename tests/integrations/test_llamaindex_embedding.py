"""KaLMEmbedding for LlamaIndex: the query instruction reaches the model; batching; async."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llama_index.embeddings.kalm as embeddings_package
import llama_index.vector_stores.kalm as stores_package
import numpy as np
import pytest
from llama_index.embeddings.kalm import KaLMEmbedding

from kalm_rag.errors import InvalidInputError

RETRIEVAL = "Given a query, retrieve documents that answer the query"


def test_all_is_pinned() -> None:
    assert embeddings_package.__all__ == ["KaLMEmbedding"]
    assert sorted(stores_package.__all__) == ["KaLMVectorStore", "to_kalm_filter"]


def test_query_gets_the_instruction_and_texts_stay_plain(tiny_kalm_encoder: Any) -> None:
    model = KaLMEmbedding(encoder=tiny_kalm_encoder)
    text = "how to install python"
    query = np.asarray(model.get_query_embedding(text))
    expected = tiny_kalm_encoder.encode([f"Instruct: {RETRIEVAL} \n Query: {text}"])[0]
    plain = tiny_kalm_encoder.encode([text])[0]
    np.testing.assert_allclose(query, expected, atol=1e-6)
    assert not np.allclose(query, plain, atol=1e-3)  # what the stock adapter would produce
    np.testing.assert_allclose(model.get_text_embedding(text), plain, atol=1e-6)

    custom = KaLMEmbedding(encoder=tiny_kalm_encoder, instruction="Find the man page for a command")
    expected = tiny_kalm_encoder.encode([f"Instruct: Find the man page for a command \n Query: {text}"])[0]
    np.testing.assert_allclose(custom.get_query_embedding(text), expected, atol=1e-6)


def test_batched_text_embeddings(tiny_kalm_encoder: Any) -> None:
    texts = ["the linux kernel", "a python library", "open source search", "debian package", "a file"]
    model = KaLMEmbedding(encoder=tiny_kalm_encoder, embed_batch_size=2)
    got = model.get_text_embedding_batch(texts)
    np.testing.assert_allclose(np.asarray(got), tiny_kalm_encoder.encode(texts), atol=1e-6)
    assert all(type(x) is float for row in got for x in row)


async def test_async_methods_match_sync(tiny_kalm_encoder: Any) -> None:
    model = KaLMEmbedding(encoder=tiny_kalm_encoder, task="sts")
    texts = ["semantically similar text", "another text"]
    assert await model.aget_query_embedding(texts[0]) == model.get_query_embedding(texts[0])
    assert await model.aget_text_embedding(texts[0]) == model.get_text_embedding(texts[0])
    assert await model.aget_text_embedding_batch(texts) == model.get_text_embedding_batch(texts)
    # a symmetric task puts the instruction on texts too
    both = tiny_kalm_encoder.encode([f"Instruct: Retrieve semantically similar text \n Query: {texts[0]}"])
    np.testing.assert_allclose(model.get_text_embedding(texts[0]), both[0], atol=1e-6)


def test_class_name_serialisation_and_shared_loads(tiny_qwen2_dir: Path, kalm_config: Any) -> None:
    options = {"model_name": str(tiny_qwen2_dir), "dtype": "float32", "model_kwargs": {"config": kalm_config}}
    first, second = KaLMEmbedding(**options), KaLMEmbedding(**options, truncate_dim=8)
    assert first.encoder is second.encoder
    assert KaLMEmbedding.class_name() == "KaLMEmbedding"
    assert first.to_dict()["class_name"] == "KaLMEmbedding"
    assert first.embed_batch_size == 32
    vector = second.get_query_embedding("a query")
    assert len(vector) == 8 and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_bad_settings(tiny_kalm_encoder: Any, default_encoder: Any) -> None:
    with pytest.raises(ValueError, match="no instruction template"):
        KaLMEmbedding(encoder=default_encoder, instruction="Find things")
    with pytest.raises(ValueError, match="unknown task type"):
        KaLMEmbedding(encoder=tiny_kalm_encoder, task="nope")
    with pytest.raises(ValueError, match="does not name the given encoder"):
        KaLMEmbedding(encoder=tiny_kalm_encoder, model_name="kalm-v2")
    with pytest.raises(ValueError, match="embed_batch_size"):
        KaLMEmbedding(encoder=tiny_kalm_encoder, embed_batch_size=0)
    with pytest.raises(InvalidInputError, match="empty"):
        KaLMEmbedding(encoder=tiny_kalm_encoder).get_text_embedding_batch(["ok", ""])
