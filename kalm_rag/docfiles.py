"""Read documents for indexing from JSONL or plain-text files, with errors naming file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from kalm_rag.errors import InvalidInputError
from kalm_rag.retriever import Document


def read_jsonl_documents(path: Path, *, text_field: str = "text", id_field: str = "id") -> list[Document]:
    """One document per line; every field besides text and id becomes metadata."""
    docs = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise InvalidInputError(f"{path}:{line_no}: expected a JSON object")
            text = row.pop(text_field, None)
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"{path}:{line_no}: field {text_field!r} is missing or empty")
            doc_id = row.pop(id_field, None)
            if id_field == "id" and doc_id is None:
                doc_id = row.pop("_id", None)  # BEIR corpora use _id
            docs.append(Document(text, None if doc_id is None else str(doc_id), row))
    return docs


def read_documents(
    paths: Iterable[Path], *, text_field: str = "text", id_field: str = "id"
) -> list[Document]:
    """``.jsonl`` files give one document per line; any other file is one document (id = path)."""
    docs: list[Document] = []
    for path in paths:
        if not path.is_file():
            raise InvalidInputError(f"input file {path} does not exist")
        if path.suffix == ".jsonl":
            docs.extend(read_jsonl_documents(path, text_field=text_field, id_field=id_field))
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path} is not UTF-8 text") from exc
        if not text.strip():
            raise InvalidInputError(f"{path} is empty")
        docs.append(Document(text, str(path), {"source": str(path)}))
    ids = [d.id for d in docs if d.id is not None]
    if len(ids) != len(set(ids)):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InvalidInputError(f"document id {dup!r} appears more than once in the input")
    return docs
