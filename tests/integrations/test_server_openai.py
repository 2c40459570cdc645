"""The embeddings server through the official ``openai`` client, and its 4xx answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from kalm_rag.server import ServerConfig, create_app
from tests.integrations.server_utils import serving

TEXTS = ["apt installs packages on Debian", "git records source code history", "sunny weather tomorrow"]
LIMITS = ServerConfig(max_inputs=8, max_input_chars=500, max_total_chars=2000, max_body_bytes=20_000)


@pytest.fixture(scope="module")
def minilm_url(default_encoder: Any) -> Iterator[str]:
    with serving(create_app(default_encoder, config=LIMITS, model_name="minilm")) as url:
        yield url


@pytest.fixture(scope="module")
def client(minilm_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{minilm_url}/v1", api_key="unused", max_retries=0)


def _vectors(response: Any) -> np.ndarray:
    return np.asarray([item.embedding for item in sorted(response.data, key=lambda d: d.index)])


def test_openai_client_gets_the_python_api_vectors(client: openai.OpenAI, default_encoder: Any) -> None:
    expected = default_encoder.encode_document(TEXTS)
    default = client.embeddings.create(model="minilm", input=TEXTS)  # the client asks for base64
    np.testing.assert_allclose(_vectors(default), expected, atol=1e-6)
    as_float = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    np.testing.assert_allclose(_vectors(as_float), expected, atol=1e-6)

    tokens = default_encoder.tokenizer(TEXTS)["input_ids"]
    assert default.usage.prompt_tokens == default.usage.total_tokens == sum(len(t) for t in tokens)
    assert default.model == "minilm" and default.object == "list"

    single = client.embeddings.create(model="minilm", input=TEXTS[1])
    np.testing.assert_allclose(_vectors(single)[0], expected[1], atol=1e-6)


def test_dimensions_truncate_like_matryoshka(client: openai.OpenAI, default_encoder: Any) -> None:
    got = _vectors(client.embeddings.create(model="minilm", input=TEXTS, dimensions=64))
    assert got.shape == (3, 64)
    np.testing.assert_allclose(got, default_encoder.encode_document(TEXTS, truncate_dim=64), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_query_input_type_uses_the_query_side(client: openai.OpenAI, default_encoder: Any) -> None:
    got = client.embeddings.create(model="minilm", input=TEXTS, extra_body={"input_type": "query"})
    np.testing.assert_allclose(_vectors(got), default_encoder.encode_query(TEXTS), atol=1e-6)


def test_the_instruction_reaches_the_model(tiny_kalm_encoder: Any) -> None:
    with serving(create_app(tiny_kalm_encoder, model_name="tiny-kalm")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        text = "how to install python"
        query = client.embeddings.create(
            model="tiny-kalm", input=[text], extra_body={"input_type": "query", "instruction": "Find code"}
        )
        expected = tiny_kalm_encoder.encode([f"Instruct: Find code \n Query: {text}"])
        np.testing.assert_allclose(_vectors(query), expected, atol=1e-6)
        document = client.embeddings.create(model="tiny-kalm", input=[text])
        np.testing.assert_allclose(_vectors(document), tiny_kalm_encoder.encode([text]), atol=1e-6)


def test_openai_client_sees_bad_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="empty or whitespace"):
        client.embeddings.create(model="minilm", input=["fine", "   "])
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")


QUERY = {"model": "minilm", "input": "x", "input_type": "query"}
BAD_REQUESTS: dict[str, tuple[dict[str, Any], int, str]] = {
    "no input": ({"model": "minilm"}, 400, "input"),
    "empty list": ({"model": "minilm", "input": []}, 400, "must not be empty"),
    "empty string": ({"model": "minilm", "input": ""}, 400, "empty or whitespace"),
    "token ids": ({"model": "minilm", "input": [101, 102]}, 400, "token-id input"),
    "token arrays": ({"model": "minilm", "input": [[101, 102]]}, 400, "token-id input"),
    "not text": ({"model": "minilm", "input": [{"text": "x"}]}, 400, "must be a string"),
    "too many": ({"model": "minilm", "input": ["x"] * 9}, 400, "at most 8 per request"),
    "too long": ({"model": "minilm", "input": ["word " * 101]}, 400, "at most 500"),
    "too much in all": ({"model": "minilm", "input": ["word " * 99] * 5}, 400, "at most 2000"),
    "dimensions 0": ({"model": "minilm", "input": "x", "dimensions": 0}, 400, "between 1 and 384"),
    "dimensions big": ({"model": "minilm", "input": "x", "dimensions": 385}, 400, "between 1 and 384"),
    "format": ({"model": "minilm", "input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    "typo": ({"model": "minilm", "input": "x", "dimension": 8}, 400, "dimension"),
    "model": ({"model": "other", "input": "x"}, 404, "not served here"),
    "a path as model": ({"model": "/etc/passwd", "input": "x"}, 404, "not served here"),
    "doc instruction": ({"model": "minilm", "input": "x", "instruction": "Find"}, 400, "queries only"),
    "no template": ({**QUERY, "instruction": "Find"}, 400, "no instruction"),
    "task": ({**QUERY, "task": "guessing"}, 400, "unknown task"),
    "search no index": ({"query": "x"}, 404, "no index is loaded"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_clear_4xx_json(minilm_url: str, case: str) -> None:
    body, status, message = BAD_REQUESTS[case]
    path = "/v1/search" if "query" in body else "/v1/embeddings"
    response = httpx.post(minilm_url + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"]


def test_malformed_and_oversized_bodies(minilm_url: str) -> None:
    broken = httpx.post(minilm_url + "/v1/embeddings", content=b"{not json", timeout=30,
                        headers={"content-type": "application/json"})  # fmt: skip
    assert broken.status_code == 400 and "error" in broken.json()
    huge = httpx.post(
        minilm_url + "/v1/embeddings", json={"model": "minilm", "input": "x" * 30_000}, timeout=30
    )
    assert huge.status_code == 413 and "bytes" in huge.json()["error"]["message"]


def test_health_and_models(minilm_url: str) -> None:
    health = httpx.get(minilm_url + "/health", timeout=30).json()
    assert health["status"] == "ok" and health["model"] == "minilm" and health["dim"] == 384
    assert health["index"] == {"loaded": False, "count": 0}
    models = httpx.get(minilm_url + "/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["minilm"]
