"""The server's /v1/search over a saved Retriever, micro-batching under concurrent load, and
``kalm-rag serve`` as a real process."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kalm_rag.server import ServerConfig, create_app, load_resources
from tests.integrations.conftest import RetrievalSample
from tests.integrations.server_utils import free_port, serving


@pytest.fixture(scope="module")
def retriever(
    default_encoder: Any, debian_sample: RetrievalSample, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    from kalm_rag import Retriever

    built = Retriever(default_encoder)
    ids = list(debian_sample.corpus)
    built.add_texts(
        [debian_sample.corpus[i] for i in ids], ids=ids, metadatas=[{"n": n} for n in range(len(ids))]
    )
    folder = built.save(tmp_path_factory.mktemp("retriever") / "debian")
    return Retriever.load(folder, encoder=default_encoder)


@pytest.fixture(scope="module")
def search_url(default_encoder: Any, retriever: Any) -> Iterator[str]:
    config = ServerConfig(max_k=20, max_batch_texts=32, max_wait_ms=10)
    with serving(create_app(default_encoder, retriever=retriever, config=config)) as url:
        yield url


def test_search_returns_what_the_retriever_returns(
    search_url: str, retriever: Any, debian_sample: RetrievalSample
) -> None:
    for query in list(debian_sample.queries.values())[:4]:
        for options in ({"k": 5}, {"k": 3, "filter": {"n": {"lt": 20}}}, {"k": 4, "hybrid": True}):
            response = httpx.post(f"{search_url}/v1/search", json={"query": query, **options}, timeout=60)
            assert response.status_code == 200, response.text
            expected = retriever.search(query, **options)
            got = response.json()["data"]
            assert [(h["id"], h["text"], h["metadata"]) for h in got] == [
                (c.id, c.text, c.metadata) for c in expected
            ]
            np.testing.assert_allclose([h["score"] for h in got], [c.score for c in expected], atol=1e-6)
    health = httpx.get(f"{search_url}/health", timeout=30).json()
    assert health["index"] == {"loaded": True, "count": len(debian_sample.corpus)}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "x", "k": 0}, "k must be between 1 and 20"),
        ({"query": "x", "k": 21}, "k must be between 1 and 20"),
        ({"query": "  "}, "query must be"),
        ({"query": "x", "filter": {"n": {"ne": 1}}}, "unknown operator"),
        ({"query": "x", "filter": {"$not": {}}}, "unknown filter operator"),
        ({"query": "x", "model": "another-model"}, "not served here"),
        ({"query": "x", "index": "/tmp/other-index"}, "index"),  # no paths from requests
    ],
)
def test_bad_searches_get_4xx(search_url: str, body: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{search_url}/v1/search", json=body, timeout=30)
    assert 400 <= response.status_code < 500 and message in response.json()["error"]["message"]


@pytest.mark.slow
def test_concurrent_load_loses_nothing(
    search_url: str, default_encoder: Any, debian_sample: RetrievalSample
) -> None:
    pool = list(debian_sample.queries.values()) + [t[:120] for t in debian_sample.corpus.values()]
    expected = dict(zip(pool, default_encoder.encode_document(pool), strict=True))
    rng = random.Random(0)
    requests = [rng.sample(pool, rng.randint(1, 3)) for _ in range(300)]
    app_batches_before = httpx.get(f"{search_url}/health", timeout=30).json()["batches"]

    async def hammer() -> list[tuple[list[str], httpx.Response]]:
        limit = asyncio.Semaphore(32)  # bounded concurrency: at most 32 requests in flight
        async with httpx.AsyncClient(base_url=search_url, timeout=60) as client:

            async def one(texts: list[str]) -> tuple[list[str], httpx.Response]:
                async with limit:
                    body = {"model": default_encoder.name_or_path, "input": texts}
                    return texts, await client.post("/v1/embeddings", json=body)

            return await asyncio.gather(*(one(texts) for texts in requests))

    started = time.perf_counter()
    results = asyncio.run(asyncio.wait_for(hammer(), timeout=150))
    elapsed = time.perf_counter() - started
    assert len(results) == 300
    for texts, response in results:
        assert response.status_code == 200, response.text
        got = np.asarray([item["embedding"] for item in response.json()["data"]])
        np.testing.assert_allclose(got, np.stack([expected[t] for t in texts]), atol=1e-5)
    batches = httpx.get(f"{search_url}/health", timeout=30).json()["batches"] - app_batches_before
    assert batches < 300 / 2, f"{batches} model calls for 300 requests: micro-batching did not batch"
    print(f"300 requests ({sum(map(len, requests))} texts) in {elapsed:.1f}s, {batches} model calls")


def test_full_queue_answers_503_and_never_hangs(default_encoder: Any) -> None:
    long_text = " ".join(["the package manager installs and upgrades software"] * 25)
    config = ServerConfig(max_batch_texts=1, max_wait_ms=0, max_queue=2)

    async def flood(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            body = {"model": default_encoder.name_or_path, "input": [long_text]}
            return await asyncio.gather(*(client.post("/v1/embeddings", json=body) for _ in range(40)))

    with serving(create_app(default_encoder, config=config)) as url:
        responses = asyncio.run(asyncio.wait_for(flood(url), timeout=120))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "overloaded"


def test_load_resources_opens_a_saved_retriever(tiny_kalm_encoder: Any, tmp_path: Path) -> None:
    from kalm_rag import Retriever

    saved = Retriever(tiny_kalm_encoder)
    saved.add_texts(["the linux kernel", "a python library"], ids=["k", "p"])
    saved.save(tmp_path / "r")
    encoder, loaded = load_resources(None, index=tmp_path / "r", dtype="float32")  # model named in the folder
    assert loaded is not None and loaded.encoder is encoder and len(loaded) == 2
    assert encoder.dim == tiny_kalm_encoder.dim


@pytest.mark.slow
def test_kalm_rag_serve_process(tiny_qwen2_dir: Path) -> None:
    """``kalm-rag serve`` as users start it: a real process on 127.0.0.1, stopped by SIGTERM."""
    port = free_port()
    cli = "import sys; from kalm_rag.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", cli, "serve", "--model", str(tiny_qwen2_dir), "--port", str(port),
               "--dtype", "float32"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.25)
        response = httpx.post(
            f"{url}/v1/embeddings", json={"model": str(tiny_qwen2_dir), "input": ["a kernel"]}
        )
        assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 32
    finally:
        process.terminate()
        process.wait(timeout=30)
