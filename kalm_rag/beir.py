"""Read retrieval tasks in the BEIR local layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from kalm_rag.errors import InvalidInputError


@dataclass(frozen=True)
class RetrievalTask:
    name: str
    corpus: dict[str, str]  # doc id -> text ("title. text" when a title is present)
    queries: dict[str, str]  # query id -> text (only queries that have judgements)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{line_no}: malformed JSON: {exc.msg}") from exc
            if not isinstance(row, dict) or "_id" not in row or "text" not in row:
                raise InvalidInputError(f"{path}:{line_no}: expected an object with '_id' and 'text'")
            rows.append(row)
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for line_no, row in enumerate(reader, 1):
            if line_no == 1 and row and row[0] == "query-id":
                continue
            if len(row) < 3:
                raise InvalidInputError(f"{path}:{line_no}: expected 'query-id<TAB>corpus-id<TAB>score'")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError as exc:
                raise InvalidInputError(f"{path}:{line_no}: score {row[2]!r} is not an integer") from exc
    return qrels


def load_retrieval_task(folder: str | Path, *, split: str = "test") -> RetrievalTask:
    """Load a BEIR-layout task; ``split`` names the qrels file (e.g. ``test`` or ``test_de``)."""
    folder = Path(folder)
    for required in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / required).is_file():
            raise InvalidInputError(f"{folder} is not a BEIR-layout task: {required} is missing")
    corpus = {}
    for row in _read_jsonl(folder / "corpus.jsonl"):
        title, text = str(row.get("title") or "").strip(), str(row["text"])
        corpus[str(row["_id"])] = f"{title}. {text}" if title else text
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = {
        str(r["_id"]): str(r["text"]) for r in _read_jsonl(folder / "queries.jsonl") if str(r["_id"]) in qrels
    }
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise InvalidInputError(f"{folder}: qrels name {len(missing)} unknown query ids, e.g. {missing[:3]}")
    return RetrievalTask(folder.name, corpus, queries, qrels)
