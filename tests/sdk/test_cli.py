"""The kalm-rag command line, run in-process on the packaged model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kalm_rag.cli import main

DOCS = [
    {"id": "ssh", "text": "Configuration management over SSH without agents on the servers", "lang": "en"},
    {"id": "pdf", "text": "Presentation viewer for PDF slides with a speaker console", "lang": "en"},
    {"id": "font", "text": "Sans serif font family for the desktop", "lang": "de"},
]


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    return path


def test_index_then_search(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "idx"
    assert main(["index", str(corpus), "--out", str(out), "--backend", "hnsw", "--no-progress"]) == 0
    assert "indexed 3 documents" in capsys.readouterr().out
    assert main(["search", str(out), "slides for a talk", "-k", "2", "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert hits[0]["id"] == "pdf" and hits[0]["metadata"] == {"lang": "en"} and len(hits) == 2
    assert main(["search", str(out), "font", "--filter", '{"lang": "de"}', "--hybrid"]) == 0
    assert "font" in capsys.readouterr().out


def test_encode_writes_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("first text\nsecond text\n\n")
    out = tmp_path / "v.npy"
    assert main(["encode", str(texts), "--out", str(out), "--query", "--truncate-dim", "64"]) == 0
    vectors = np.load(out)
    assert vectors.shape == (2, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    assert main(["index", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "bad.jsonl:2: malformed JSON" in capsys.readouterr().err
    assert main(["search", str(tmp_path), "query"]) == 2
    assert "not a saved retriever" in capsys.readouterr().err
    missing_text = tmp_path / "m.jsonl"
    missing_text.write_text('{"id": "a", "body": "x"}\n')
    assert main(["index", str(missing_text), "--out", str(tmp_path / "y")]) == 2
    assert "field 'text' is missing" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_help_runs_as_a_console_script() -> None:
    result = subprocess.run([sys.executable, "-m", "kalm_rag.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "index" in result.stdout and "serve" in result.stdout
