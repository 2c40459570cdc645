"""Synthetic generation through the OpenAI-compatible backend, against a small fake chat
server started on 127.0.0.1 (a stand-in for vLLM / TGI / a hosted API). The server answers
like a sloppy LLM on purpose: wrapped JSON, refusals, truncated JSON and HTTP 500s."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kalm_trainer.data.jsonl import read_examples
from kalm_trainer.data.steps import run_step
from kalm_trainer.synth.generate import SynthConfig, generate_synthetic
from kalm_trainer.synth.llm import LLMConfig, Sampling, load_chat_model
from kalm_trainer.synth.parse import dedupe_key
from kalm_trainer.synth.remote import OpenAIChatModel

from kalm_rag.errors import KalmRagError

PERSONAS = [
    "A marine biologist who studies oceans",
    "A jazz drummer touring Europe",
    "A tax accountant in Ohio",
]
TOPICS = {"marine": "oceans", "jazz": "jazz", "tax": "taxes"}


@dataclass
class FakeLLM:
    """Canned replies keyed on the prompt; records what it did so tests can check the counts."""

    seen: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, str]] = field(default_factory=list)  # (kind, "ok" | "malformed" | "error")
    formats: list[tuple[str, Any]] = field(default_factory=list)  # (prompt start, response_format)
    counter: int = 0
    reject_json_schema: bool = False  # as llama-cpp-python's server: only text / json_object
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, messages: list[dict[str, str]]) -> tuple[int, str]:
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        with self.lock:
            self.seen[system + user] += 1
            first = self.seen[system + user] == 1
            self.counter += 1
            n = self.counter
        topic = next((t for key, t in TOPICS.items() if key in system.lower()), "things")
        if "Brainstorm" in user:
            kind = "brainstorm"
            if "jazz" in system and first:
                return self.record(kind, "malformed", "Here are some tasks: 1. find songs 2. find gigs")
            tasks = [
                f"Given a question about {topic}, retrieve a detailed answer",
                "Given a question, retrieve documents that answer it",  # the same for everyone
                f"Given a {topic} term, retrieve its definition",
            ]
            return self.record(kind, "ok", f"```json\n{json.dumps(tasks)}\n```")
        if "Task: " in user:
            kind = "example"
            instruction = user.split("Task: ", 1)[1].split("\n", 1)[0]
            if "taxes" in instruction:
                return self.record(kind, "malformed", '{"query": "how do I file", "positive": "You')
            if "definition" in instruction and first:
                return self.record(kind, "error", "")
        elif "Who is most likely" in user:
            return self.record("persona", "ok", json.dumps({"persona": f"A reader of text number {n}"}))
        else:
            kind = "sts" if "similarity" in user else "bitext"
        body = {"query": f"query {n}", "positive": f"positive {n}", "hard_negative": f"negative {n}"}
        return self.record(kind, "ok", "Sure!\n" + json.dumps(body))

    def record(self, kind: str, outcome: str, text: str) -> tuple[int, str]:
        with self.lock:
            self.log.append((kind, outcome))
        return (500 if outcome == "error" else 200), text

    def count(self, kind: str, outcome: str | None = None) -> int:
        return sum(k == kind and (outcome is None or o == outcome) for k, o in self.log)


@pytest.fixture
def server() -> Iterator[tuple[str, FakeLLM]]:
    fake = FakeLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions"
            fake.formats.append((payload["messages"][-1]["content"][:10], payload.get("response_format")))
            if (
                fake.reject_json_schema
                and (payload.get("response_format") or {}).get("type") == "json_schema"
            ):
                status, text = 500, "Input should be 'text' or 'json_object', input: 'json_schema'"
            else:
                status, text = fake.reply(payload["messages"])
            body: dict[str, Any] = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": payload["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            if status != 200:
                body = {"error": {"message": text or "overloaded", "type": "server_error"}}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", fake
    httpd.shutdown()
    httpd.server_close()


def synth_config(url: str, **overrides: Any) -> SynthConfig:
    llm = LLMConfig(backend="openai", model="fake-model", base_url=url, http_retries=0, max_concurrency=4)
    settings: dict[str, Any] = {
        "llm": llm,
        "task_types": ("short-long", "long-long", "sts", "bitext"),
        "brainstorms_per_task": 4,
        "instructions_per_brainstorm": 3,
        "symmetric_examples": 3,
        "max_retries": 2,
        "seed": 11,
    }
    return SynthConfig(**{**settings, **overrides})


def test_two_stage_generation_counts_match_what_the_server_did(server: tuple[str, FakeLLM]) -> None:
    url, fake = server
    config = synth_config(url)
    result = generate_synthetic(load_chat_model(config.llm), PERSONAS, config)
    stats = result.stats

    # stage 1: every request the server saw is a first ask or a retry; malformed ones recovered
    assert stats["brainstorm_requested"] == 8
    assert stats["brainstorm_requested"] + stats["brainstorm_retries"] == fake.count("brainstorm")
    assert stats["brainstorm_malformed"] == fake.count("brainstorm", "malformed") > 0
    assert stats["brainstorm_recovered"] == stats["brainstorm_malformed"] and stats["brainstorm_dropped"] == 0
    assert stats["brainstorm_malformed_reasons"] == {"no JSON list": stats["brainstorm_malformed"]}
    # instructions: de-duplicated across brainstorms and personas
    keys = [dedupe_key(text) for _, text in result.instructions]
    assert len(keys) == len(set(keys)) == stats["instructions_unique"]
    assert stats["instructions_found"] == 8 * 3 and stats["instructions_duplicate"] == 24 - len(keys)
    assert sum("Given a question, retrieve documents" in text for _, text in result.instructions) == 1

    # stage 2: tax instructions always fail -> dropped after 2 retries; 500s are retried
    tax_jobs = sum("taxes" in text for _, text in result.instructions)
    assert stats["example_dropped"] == tax_jobs and stats["example_dropped"] > 0
    assert stats["example_request_errors"] == fake.count("example", "error") > 0
    assert stats["example_malformed"] == fake.count("example", "malformed") == 3 * tax_jobs
    example_requests = sum(fake.count(kind) for kind in ("example", "sts", "bitext"))
    assert stats["example_requested"] + stats["example_retries"] == example_requests
    assert stats["example_ok"] == len(result.examples) == stats["examples"]
    assert stats["example_requested"] == len(keys) + 2 * 3  # one per instruction + 3 sts + 3 bitext

    # what is kept is valid and labelled with its task
    tasks = Counter(ex.task for ex in result.examples)
    assert tasks["synthetic-sts"] == 3 and tasks["synthetic-bitext"] == 3
    assert tasks["synthetic-short-long"] + tasks["synthetic-long-long"] == len(keys) - tax_jobs
    for ex in result.examples:
        assert ex.query.startswith("query ") and len(ex.positives) == len(ex.negatives) == 1
        assert ex.instruction and "taxes" not in ex.instruction
        assert ex.meta["persona"] in PERSONAS


def test_requests_carry_each_stage_json_schema(server: tuple[str, FakeLLM]) -> None:
    url, fake = server
    config = synth_config(url, task_types=("short-short",), brainstorms_per_task=1)
    generate_synthetic(load_chat_model(config.llm), PERSONAS, config)
    formats = {prompt: fmt for prompt, fmt in fake.formats}
    brainstorm = formats["Brainstorm"]["json_schema"]["schema"]
    example = formats["You are wr"]["json_schema"]["schema"]
    assert formats["Brainstorm"]["type"] == "json_schema" and brainstorm["type"] == "array"
    assert brainstorm["maxItems"] == 3 and brainstorm["items"]["type"] == "string"
    assert example["required"] == ["query", "positive", "hard_negative"]
    fake.formats.clear()
    plain = synth_config(url, task_types=("sts",), llm=dataclasses.replace(config.llm, constrain=False))
    generate_synthetic(load_chat_model(plain.llm), PERSONAS, plain)
    assert fake.formats and all(fmt is None for _, fmt in fake.formats)


def test_a_server_without_json_schema_gets_json_object_with_the_schema(server: tuple[str, FakeLLM]) -> None:
    """llama-cpp-python's server rejects ``json_schema``: the first rejection switches every later
    request to ``json_object`` + schema, and the rejected request is sent again, not lost."""
    url, fake = server
    fake.reject_json_schema = True
    llm = dataclasses.replace(synth_config(url).llm, max_concurrency=1)
    config = synth_config(url, task_types=("sts",), symmetric_examples=3, llm=llm)
    result = generate_synthetic(load_chat_model(config.llm), PERSONAS, config)
    assert len(result.examples) == 3 and result.stats["example_request_errors"] == 0
    kinds = [fmt["type"] for _, fmt in fake.formats]
    assert kinds == ["json_schema", "json_object", "json_object", "json_object"]
    assert fake.formats[-1][1]["schema"]["required"] == ["query", "positive", "hard_negative"]


def test_synthesize_step_writes_examples_and_manifest(server: tuple[str, FakeLLM], tmp_path: Path) -> None:
    url, fake = server
    personas = tmp_path / "personas.txt"
    personas.write_text("\n".join(PERSONAS) + "\n", encoding="utf-8")
    config = {
        "llm": {"backend": "openai", "model": "fake", "base_url": url, "http_retries": 0},
        "task_types": ["short-short", "sts"],
        "brainstorms_per_task": 2,
        "symmetric_examples": 2,
        "seed": 3,
    }
    manifest = run_step("synthesize", config, [personas], tmp_path / "synth")
    written = read_examples(manifest.output_path()).examples
    assert len(written) == manifest.stats["examples"] > 0
    assert (tmp_path / "synth" / "instructions.jsonl").is_file()
    requests = len(fake.log)
    again = run_step("synthesize", config, [personas], tmp_path / "synth")
    assert again.skipped and len(fake.log) == requests  # resumed: no new LLM calls


def test_personas_from_corpus_step(server: tuple[str, FakeLLM], tmp_path: Path) -> None:
    url, _ = server
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(6)), encoding="utf-8"
    )
    config = {"llm": {"backend": "openai", "model": "fake", "base_url": url}, "max_texts": 4}
    manifest = run_step("personas_from_corpus", config, [corpus], tmp_path / "personas")
    personas = manifest.output_path("personas.txt").read_text(encoding="utf-8").splitlines()
    assert len(personas) == 4 == manifest.stats["personas"]
    assert all(p.startswith("A reader of text number") for p in personas)


def test_unreachable_endpoint_is_a_clear_error() -> None:
    llm = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
    with pytest.raises(KalmRagError, match="every request to the chat endpoint failed"):
        llm.chat([[{"role": "user", "content": "hi"}]], sampling=Sampling())
