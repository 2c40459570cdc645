"""A corpus of bad input run through every public entry point: each one must end in a clear
``InvalidInputError``/``ConfigError`` (or exit code 2 / HTTP 4xx), never a crash from deep inside
a tokenizer, an engine or the standard library, and never a silent acceptance.

Entry points: Encoder, the index backends, Retriever, the LangChain store, the CLI, the server
and the trainer's pair files. The README's "Decisions" section says what each does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kalm_rag import ConfigError, Encoder, InvalidInputError, Retriever
from kalm_rag.index.persist import load_index
from kalm_rag.index.storage import read_manifest
from kalm_rag.retriever import Document, RetrieverConfig

SURROGATE = "a\ud800b"
BACKENDS = ["brute", "hnsw", "qdrant-edge"]


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir: Path) -> Encoder:
    return Encoder.from_pretrained(tiny_bert_dir, dtype="float32")


def _index(backend: str, dim: int = 8) -> Any:
    from kalm_rag import BruteForceIndex, HnswIndex, QdrantIndex

    return {"brute": BruteForceIndex, "hnsw": HnswIndex, "qdrant-edge": QdrantIndex}[backend](dim)


def _nested(depth: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"k": 1}
    for _ in range(depth):
        spec = {"$or": [spec]}
    return spec


# -- Encoder -------------------------------------------------------------------------------------

BAD_TEXTS = [None, "", "   ", 123, b"bytes", SURROGATE, ["ok", None], ["ok", "x\udfff"], [["nested"]]]


@pytest.mark.parametrize("texts", BAD_TEXTS, ids=repr)
def test_encoder_rejects_bad_texts(tiny: Encoder, texts: Any) -> None:
    with pytest.raises(InvalidInputError):
        tiny.encode(texts)
    with pytest.raises(InvalidInputError):
        tiny.encode_document(texts)


@pytest.mark.parametrize("value", [True, False, 0, -1, "8", 8.0, 10**6])
def test_encoder_rejects_bad_truncate_dim(tiny: Encoder, value: Any) -> None:
    with pytest.raises(InvalidInputError, match="truncate_dim"):
        tiny.encode(["fine"], truncate_dim=value)


@pytest.mark.parametrize("value", [0, -3, "x", 2.5, True])
def test_encoder_rejects_bad_batch_size(tiny: Encoder, value: Any) -> None:
    with pytest.raises(InvalidInputError, match="batch_size"):
        tiny.encode(["fine"], batch_size=value)


def test_unknown_task_is_an_error_on_both_sides(tiny: Encoder) -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        tiny.encode_query(["q"], task="translation-ish")
    with pytest.raises(ConfigError, match="unknown task"):
        tiny.encode_document(["d"], task="translation-ish")


def test_instruction_with_a_lone_surrogate_is_rejected(tiny_qwen2_dir: Path) -> None:
    kalm = Encoder.from_pretrained(
        tiny_qwen2_dir, dtype="float32", instruction_template="Instruct: {instruction} \n Query: "
    )
    with pytest.raises(InvalidInputError, match="not valid Unicode"):
        kalm.encode_query(["q"], instruction=SURROGATE)


def test_e5_prompt_models_use_the_query_prompt_on_both_sides_for_symmetric_tasks(
    tiny_bert_dir: Path,
) -> None:
    e5 = Encoder.from_pretrained(
        tiny_bert_dir, dtype="float32", query_prompt="query: ", document_prompt="passage: "
    )
    assert e5.config.document_prefix(task="sts") == "query: "  # e5's card: symmetric -> query: both
    assert e5.config.document_prefix(task="retrieval") == "passage: "
    texts = ["a kernel module", "a python library"]
    np.testing.assert_allclose(
        e5.encode_document(texts, task="sts"), e5.encode_query(texts, task="sts"), atol=1e-6
    )
    np.testing.assert_allclose(e5.encode_document(texts), e5.encode(texts, prompt="passage: "), atol=1e-6)


# -- index backends ------------------------------------------------------------------------------

BAD_IDS = [[SURROGATE], [""], [None], "abc", [1]]
BAD_PAYLOADS = [
    {"k": SURROGATE},
    {SURROGATE: 1},
    {"k": 2**64},
    {"k": -(2**63) - 1},
    {"k": float("nan")},
    {"k": {"deep": [SURROGATE]}},
    {"k": object()},
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ids", BAD_IDS, ids=repr)
def test_index_rejects_bad_ids(backend: str, ids: Any) -> None:
    index = _index(backend)
    with pytest.raises(InvalidInputError, match="ids"):
        index.add(ids, np.ones((1, 8), np.float32))
    assert len(index) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("payload", BAD_PAYLOADS, ids=repr)
def test_index_rejects_bad_payloads_and_changes_nothing(backend: str, payload: Any) -> None:
    index = _index(backend)
    with pytest.raises(InvalidInputError, match="payload #1"):
        index.add(["ok", "bad"], np.ones((2, 8), np.float32), payloads=[{"k": 1}, payload])
    assert len(index) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_rejects_payloads_that_are_not_dicts(backend: str) -> None:
    index = _index(backend)
    with pytest.raises(InvalidInputError, match="payload #0 must be a dict"):
        index.add(["a"], np.ones((1, 8), np.float32), payloads=["x"])  # type: ignore[list-item]


BAD_FILTERS = [
    (_nested(5000), "nested more than"),
    (_nested(65), "nested more than"),
    ({"k": 2**64}, "64 bits"),
    ({"k": {"in": [1, -(2**63) - 1]}}, "64 bits"),
    ({"k": {"gt": 10**400}}, "out of range"),
    ({"k": SURROGATE}, "not valid Unicode"),
    ({SURROGATE: 1}, "not valid Unicode"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("spec", "message"),
    BAD_FILTERS,
    ids=[
        "depth-5000",
        "depth-65",
        "int-2^64",
        "in-below-int64",
        "huge-bound",
        "surrogate-value",
        "surrogate-key",
    ],
)
def test_index_rejects_bad_filters(backend: str, spec: Any, message: str) -> None:
    index = _index(backend)
    index.add(["a"], np.ones((1, 8), np.float32), payloads=[{"k": 1}])
    with pytest.raises(InvalidInputError, match=message):
        index.search(np.ones(8, np.float32), k=1, filter=spec)


def test_filters_up_to_the_depth_limit_still_work() -> None:
    index = _index("brute")
    index.add(["a"], np.ones((1, 8), np.float32), payloads=[{"k": 1}])
    assert [h.id for h in index.search(np.ones(8, np.float32), k=1, filter=_nested(64))[0]] == ["a"]


def _saved(backend: str, tmp_path: Path) -> tuple[Path, Path]:
    index = _index(backend)
    rng = np.random.default_rng(0)
    index.add([str(i) for i in range(20)], rng.normal(size=(20, 8)).astype(np.float32))
    index.save(tmp_path / "idx")
    if hasattr(index, "close"):
        index.close()
    _, data = read_manifest(tmp_path / "idx")
    return tmp_path / "idx", data


@pytest.mark.parametrize(
    ("backend", "file"),
    [("brute", "vectors.npy"), ("hnsw", "hnsw.bin"), ("hnsw", "vectors.npy"), ("hnsw", "labels.json")],
)
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_index_files_give_a_clear_error(backend: str, file: str, damage: str, tmp_path: Path) -> None:
    path, data = _saved(backend, tmp_path)
    target = data / file
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"\x00garbage" * 3)
    with pytest.raises(InvalidInputError, match="damaged"):
        load_index(path)


def test_damaged_qdrant_shard_gives_a_clear_error(tmp_path: Path) -> None:
    path, data = _saved("qdrant-edge", tmp_path)
    for file in (data / "shard").rglob("*"):
        if file.is_file() and file.stat().st_size:
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 3])
    with pytest.raises(InvalidInputError, match="is damaged"):
        load_index(path)


MANIFEST_EDITS = [
    (lambda m: m.pop("dim"), "missing field 'dim'"),
    (lambda m: m.update(dim="8"), "field 'dim' must be int"),
    (lambda m: m.update(count=None), "field 'count' must be int"),
    (lambda m: m.update(config=[]), "field 'config' must be dict"),
    (lambda m: m["config"].update(bogus=1), "field 'config' is invalid"),
    (lambda m: m["config"].update(m="16"), "field 'config' is invalid"),
    (lambda m: m.update(data="../elsewhere"), "field 'data'"),
    (lambda m: m.update(dim=16), "is damaged: .*(16|dim)"),
]


@pytest.mark.parametrize("backend", ["brute", "hnsw"])
@pytest.mark.parametrize(("edit", "message"), MANIFEST_EDITS, ids=[m for _, m in MANIFEST_EDITS])
def test_hand_edited_index_manifest_is_checked(backend: str, edit: Any, message: str, tmp_path: Path) -> None:
    path, _ = _saved(backend, tmp_path)
    manifest = json.loads((path / "index.json").read_text())
    if backend == "brute" and message == "field 'config' is invalid":
        pytest.skip("the exact index has no config")
    manifest.setdefault("config", {})
    edit(manifest)
    (path / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match=message):
        load_index(path)


# -- Retriever -----------------------------------------------------------------------------------


@pytest.fixture()
def retriever(tiny: Encoder) -> Retriever:
    return Retriever(tiny, config=RetrieverConfig(chunk_tokens=16, chunk_overlap=4))


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([{"text": None}], "must be a string"),
        ([{"text": 123}], "must be a string"),
        ([{"text": "x", "metadata": "x"}], "metadata'\\] must be a dict"),
        ([{"text": "x", "metadata": ["a"]}], "must be a dict"),
        ([{"text": SURROGATE}], "not valid Unicode"),
        ([{"text": "x", "id": SURROGATE}], "ids must be"),
        ([{"text": "x", "id": {"a": 1}}], "'id'\\] must be a string"),
        ([{"text": "x", "lang": "en"}], "unknown key"),
        ([{"text": "x", "metadata": {"k": SURROGATE}}], "not valid Unicode"),
        ([{"text": "x", "metadata": {"k": 2**70}}], "64 bits"),
        ([{"text": " ".join(f"w{i}" for i in range(80)), "metadata": {"chunk": 3}}], "'chunk'"),
        ([{"text": " ".join(f"w{i}" for i in range(80)), "metadata": {"doc_id": "mine"}}], "'doc_id'"),
        (["just a string"], "must be a Document or a mapping"),
    ],
    ids=lambda v: repr(v)[:50],
)
def test_retriever_add_documents_rejects(retriever: Retriever, docs: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        retriever.add_documents(docs)
    assert len(retriever) == 0


def test_short_documents_keep_their_own_chunk_metadata(retriever: Retriever) -> None:
    retriever.add_documents([Document("short", id="d", metadata={"chunk": "intro"})])
    assert retriever.index.get(["d"])[0].payload["chunk"] == "intro"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("metadatas", "message"),
    [(["x"], "metadatas\\[0\\] must be a dict"), ({"a": 1}, "one dict"), ("x", "one dict")],
)
def test_retriever_add_texts_rejects_bad_metadatas(
    retriever: Retriever, metadatas: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        retriever.add_texts(["t"], metadatas=metadatas)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": "x"},
        {"batch_size": True},
        {"chunk_tokens": 64.0},
        {"rrf_k": None},
        {"task": "nope"},
        {"task": ""},
        {"hybrid_bm25": "yes"},
        {"instruction": 3},
    ],
    ids=repr,
)
def test_retriever_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RetrieverConfig(**kwargs)


def test_retriever_search_rejects_surrogates(retriever: Retriever) -> None:
    retriever.add_texts(["apt"])
    with pytest.raises(InvalidInputError, match="query is not valid Unicode"):
        retriever.search(SURROGATE)


RETRIEVER_EDITS = [
    (lambda m: m.pop("dim"), "missing field"),
    (lambda m: m.pop("encoder"), "missing field"),
    (lambda m: m.update(dim="8"), "field 'dim' has the wrong type"),
    (lambda m: m.update(config="x"), "field 'config' has the wrong type"),
    (lambda m: m.update(extra=1), "unknown field"),
    (lambda m: m["config"].update(batch_size="x"), "field 'config' is invalid"),
    (lambda m: m["config"].update(bogus=1), "field 'config' is invalid"),
    (lambda m: m.update(count=99), "says 99 items"),
]


@pytest.mark.parametrize(("edit", "message"), RETRIEVER_EDITS, ids=[m for _, m in RETRIEVER_EDITS])
def test_malformed_retriever_json_names_file_and_field(
    retriever: Retriever, edit: Any, message: str, tmp_path: Path
) -> None:
    retriever.add_texts(["apt installs"], ids=["a"])
    retriever.save(tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / "retriever.json").read_text())
    edit(manifest)
    (tmp_path / "r" / "retriever.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match=f"retriever.json.*{message}|{message}"):
        Retriever.load(tmp_path / "r", encoder=retriever.encoder)


def test_bm25_folder_from_another_retriever_is_detected(tiny: Encoder, tmp_path: Path) -> None:
    first, second = Retriever(tiny), Retriever(tiny)
    first.add_texts(["apt", "dpkg"], ids=["a", "b"])
    second.add_texts(["vim", "emacs"], ids=["v", "e"])
    first.save(tmp_path / "one")
    second.save(tmp_path / "two")
    shutil.rmtree(tmp_path / "one" / "bm25")
    shutil.copytree(tmp_path / "two" / "bm25", tmp_path / "one" / "bm25")
    with pytest.raises(InvalidInputError, match="bm25/ holds ids that index/ does not"):
        Retriever.load(tmp_path / "one", encoder=tiny)


# -- LangChain store -----------------------------------------------------------------------------


def test_langchain_store_rejects_bad_texts_and_metadata(tiny: Encoder) -> None:
    pytest.importorskip("langchain_kalm")
    from langchain_kalm import KaLMEmbeddings, KaLMVectorStore

    store = KaLMVectorStore(KaLMEmbeddings(encoder=tiny))
    for texts, metadatas in (([SURROGATE], None), (["ok"], [{"k": SURROGATE}]), (["ok"], [{"k": 2**70}])):
        with pytest.raises(InvalidInputError):
            store.add_texts(texts, metadatas=metadatas)
    with pytest.raises(InvalidInputError):
        store.similarity_search(SURROGATE)


# -- CLI -----------------------------------------------------------------------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from kalm_rag.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_cli_index_non_utf8_jsonl_names_file_and_line(tmp_path: Path, capsys: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    code, err = _cli(["index", str(corpus), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{corpus}:2: not UTF-8" in err


def test_cli_index_lone_surrogate_escape_names_file_and_line(tmp_path: Path, capsys: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "bad \\ud800"}\n')
    code, err = _cli(["index", str(corpus), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{corpus}:2:" in err and "surrogate" in err


def test_cli_index_plain_text_file_non_utf8(tmp_path: Path, capsys: Any) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"line one\nline two\n\xff\xfe three\n")
    code, err = _cli(["index", str(doc), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{doc}:3: not UTF-8" in err


def test_cli_index_empty_jsonl_is_an_error(tmp_path: Path, capsys: Any) -> None:
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("\n\n")
    code, err = _cli(["index", str(corpus), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no documents" in err
    assert not (tmp_path / "o").exists()


def test_cli_encode_non_utf8_names_file_and_line(tmp_path: Path, capsys: Any) -> None:
    texts = tmp_path / "t.txt"
    texts.write_bytes(b"ok\n\xe9t\xe9\n")
    code, err = _cli(["encode", str(texts), "--out", str(tmp_path / "v.npy")], capsys)
    assert code == 2 and f"{texts}:2: not UTF-8" in err


@pytest.mark.parametrize(
    ("extra", "message"), [(["--task", "nope"], "unknown task"), (["--truncate-dim", "0"], "truncate_dim")]
)
def test_cli_encode_rejects_bad_options(
    tiny_bert_dir: Path, tmp_path: Path, capsys: Any, extra: list[str], message: str
) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    argv = ["encode", str(texts), "--out", str(tmp_path / "v.npy"), "--model", str(tiny_bert_dir)]
    code, err = _cli([*argv, "--dtype", "float32", *extra], capsys)
    assert code == 2 and message in err and not (tmp_path / "v.npy").exists()


# -- server --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(tiny: Encoder) -> Any:
    pytest.importorskip("fastapi")
    from kalm_rag.server.app import create_app
    from kalm_rag.server.config import ServerConfig
    from tests.integrations.server_utils import serving

    retriever = Retriever(tiny)
    retriever.add_texts(["apt installs packages"], ids=["a"], metadatas=[{"k": 1}])
    app = create_app(tiny, retriever=retriever, config=ServerConfig(max_body_bytes=2000), model_name="t")
    with serving(app) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/embeddings", '{"model": "t", "input": "a\\ud800"}', 400),
        ("/v1/embeddings", '{"model": "t", "input": ["ok", "x\\udfff"]}', 400),
        ("/v1/embeddings", '{"model": "t", "input": "ok", "task": "nope"}', 400),
        ("/v1/embeddings", '{"model": "t", "input": "ok", "input_type": "query", "task": "nope"}', 400),
        (
            "/v1/embeddings",
            '{"model": "t", "input": "ok", "input_type": "query", "instruction": "\\ud800"}',
            400,
        ),
        ("/v1/search", '{"query": "a\\ud800"}', 400),
        ("/v1/search", '{"query": "apt", "filter": {"k": 18446744073709551617}}', 400),
        ("/v1/search", '{"query": "apt", "filter": {"\\ud800": 1}}', 400),
    ],
)
def test_server_answers_bad_input_with_4xx(server_url: str, path: str, body: str, status: int) -> None:
    import httpx

    response = httpx.post(server_url + path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_server_limits_chunked_bodies_too(server_url: str) -> None:
    import httpx

    def chunks() -> Any:  # no Content-Length: httpx sends it chunked
        yield b'{"model": "t", "input": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = httpx.post(
        server_url + "/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "bytes" in response.json()["error"]["message"]
    small = httpx.post(
        server_url + "/v1/embeddings",
        content=iter([b'{"model": "t", ', b'"input": "ok"}']),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 200, small.text


# -- trainer pair files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"query": "q", "positives": ["p"]}\n{"query": "caf\xe9", "positives": ["p"]}\n', ":2: not UTF-8"),
        (
            b'{"query": "q", "positives": ["p"]}\n{"query": "\\ud800", "positives": ["p"]}\n',
            ":2: holds a lone",
        ),
    ],
)
def test_trainer_pair_files_name_file_and_line(tmp_path: Path, raw: bytes, message: str) -> None:
    pytest.importorskip("kalm_trainer")
    from kalm_trainer.data.jsonl import read_examples

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(raw)
    with pytest.raises(InvalidInputError, match=f"pairs.jsonl{message}"):
        read_examples(pairs)
    report = read_examples(pairs, on_error="skip")  # skipping counts the line, never drops it silently
    assert len(report.examples) == 1 and report.skipped[0].line == 2
