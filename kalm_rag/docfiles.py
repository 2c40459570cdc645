"""Read documents for indexing from JSONL or plain-text files, with errors naming file and line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

from kalm_rag.errors import InvalidInputError
from kalm_rag.retriever import Document


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (with their line ends); an error names the first bad line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInputError(
            f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); convert the file to UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None
    return list(io.StringIO(text))  # splits on newlines only (JSON strings may hold U+2028)


def read_jsonl_documents(path: Path, *, text_field: str = "text", id_field: str = "id") -> list[Document]:
    """One document per line; every field besides text and id becomes metadata."""
    docs = []
    for line_no, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise InvalidInputError(f"{path}:{line_no}: expected a JSON object")
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"{path}:{line_no}: holds a lone surrogate escape (such as \\ud800), which is not text"
            ) from None
        text = row.pop(text_field, None)
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"{path}:{line_no}: field {text_field!r} is missing or empty")
        doc_id = row.pop(id_field, None)
        if id_field == "id" and doc_id is None:
            doc_id = row.pop("_id", None)  # BEIR corpora use _id
        if doc_id is not None and (isinstance(doc_id, bool) or not isinstance(doc_id, str | int)):
            raise InvalidInputError(f"{path}:{line_no}: field {id_field!r} must be a string or an integer")
        docs.append(Document(text, None if doc_id is None else str(doc_id), row))
    return docs


def read_documents(
    paths: Iterable[Path], *, text_field: str = "text", id_field: str = "id"
) -> list[Document]:
    """``.jsonl`` files give one document per line; any other file is one document (id = path)."""
    docs: list[Document] = []
    paths = list(paths)
    for path in paths:
        if not path.is_file():
            raise InvalidInputError(f"input file {path} does not exist")
        if path.suffix == ".jsonl":
            docs.extend(read_jsonl_documents(path, text_field=text_field, id_field=id_field))
            continue
        text = "".join(read_lines(path))
        if not text.strip():
            raise InvalidInputError(f"{path} is empty")
        docs.append(Document(text, str(path), {"source": str(path)}))
    if not docs:
        raise InvalidInputError(f"no documents in {', '.join(str(p) for p in paths)}: nothing to index")
    ids = [d.id for d in docs if d.id is not None]
    if len(ids) != len(set(ids)):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InvalidInputError(f"document id {dup!r} appears more than once in the input")
    return docs
