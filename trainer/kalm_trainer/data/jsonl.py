"""Read and write training examples as JSONL, one validated example a line.

A malformed line raises an error naming the file and line, or (``on_error="skip"``) is
skipped and reported in :class:`ReadReport` - never dropped without a trace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_trainer.data.files import atomic_text_file
from kalm_trainer.data.schema import TrainingExample, example_from_dict, example_to_dict

__all__ = [
    "LineError",
    "OnError",
    "ReadReport",
    "iter_jsonl",
    "read_examples",
    "read_with",
    "write_examples",
    "write_jsonl",
]

OnError = Literal["raise", "skip"]
PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class LineError:
    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


@dataclass(slots=True)
class ReadReport:
    """What reading produced: the examples, the skipped lines and why, the blank lines seen."""

    examples: list[TrainingExample] = field(default_factory=list)
    skipped: list[LineError] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "read": len(self.examples),
            "skipped_malformed": len(self.skipped),
            "blank_lines": self.blank_lines,
        }


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, object | None, str | None]]:
    """Yield ``(line_number, decoded_object, problem)`` per non-blank line; blank lines give
    ``(n, None, None)``. Decoding problems are reported, not raised, so callers choose."""
    with open(path, "rb") as handle:  # bytes: a non-UTF-8 line is reported with its number
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                continue
            if not line.strip():
                yield number, None, None
                continue
            try:
                obj = json.loads(line)
                if "\\ud" in line.lower():  # a surrogate escape: make sure it was a valid pair
                    json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
            except (UnicodeEncodeError, RecursionError):
                yield number, None, "holds a lone surrogate escape (such as \\ud800) or nests too deeply"
            else:
                yield number, obj, None


def read_with(
    paths: PathLike | Sequence[PathLike],
    parse: Callable[[object], TrainingExample],
    *,
    on_error: OnError = "raise",
) -> ReadReport:
    """Read JSONL files in order, turning each object into an example with ``parse`` (which
    raises InvalidInputError for a bad object)."""
    _check_on_error(on_error)
    report = ReadReport()
    for path in [paths] if isinstance(paths, str | os.PathLike) else list(paths):
        if not Path(path).is_file():
            raise InvalidInputError(f"data file not found: {path}")
        for number, obj, problem in iter_jsonl(path):
            if obj is None and problem is None:
                report.blank_lines += 1
                continue
            if problem is None:
                try:
                    report.examples.append(parse(obj))
                    continue
                except InvalidInputError as exc:
                    problem = str(exc)
            error = LineError(str(path), number, problem)
            if on_error == "raise":
                raise InvalidInputError(f"{error} (pass on_error='skip' to skip and count bad lines)")
            report.skipped.append(error)
    return report


def read_examples(paths: PathLike | Sequence[PathLike], *, on_error: OnError = "raise") -> ReadReport:
    """Read one or several JSONL files of :class:`TrainingExample` in order."""
    return read_with(paths, example_from_dict, on_error=on_error)


def write_jsonl(path: PathLike, rows: Iterable[object]) -> int:
    """Atomically write JSON-serialisable rows, one a line; returns the number written."""
    count = 0
    with atomic_text_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count


def write_examples(path: PathLike, examples: Iterable[TrainingExample]) -> int:
    """Atomically write examples as JSONL; returns the number written."""
    return write_jsonl(path, (example_to_dict(ex) for ex in examples))
