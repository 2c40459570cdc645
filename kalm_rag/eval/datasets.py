"""Read local evaluation task folders into plain data (no torch, mteb or datasets here).

Three layouts are recognised (the layouts of ``shared/data/dev``):

- retrieval, BEIR local layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv`` and
  optionally ``qrels/test_<lang>.tsv`` per query language (read by :mod:`kalm_rag.beir`);
- bitext mining: one sub-folder per language pair (``en-de/``) holding ``sentences1.jsonl`` and
  ``sentences2.jsonl`` where line i of both files is a gold pair;
- STS: ``pairs.jsonl`` with ``sentence1``, ``sentence2`` and a gold ``score``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kalm_rag.errors import InvalidInputError

TaskKind = Literal["retrieval", "bitext", "sts"]
ALL_LANGUAGES = "all"


@dataclass(frozen=True)
class BitextPair:
    """One language pair of a bitext-mining task: ``sentences2[i]`` translates ``sentences1[i]``."""

    name: str  # folder name, e.g. "en-de"
    sentences1: list[str]
    sentences2: list[str]

    @property
    def languages(self) -> tuple[str, str]:
        source, _, target = self.name.partition("-")
        return source, target or source


@dataclass(frozen=True)
class STSPairs:
    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]  # gold similarity, higher is more similar


def task_kind(folder: str | Path) -> TaskKind:
    """Which layout ``folder`` has; an error names the files each layout needs."""
    path = Path(folder)
    if (path / "corpus.jsonl").is_file():
        return "retrieval"
    if (path / "pairs.jsonl").is_file():
        return "sts"
    if bitext_pair_folders(path):
        return "bitext"
    raise InvalidInputError(
        f"{path} is not a task folder: expected corpus.jsonl + queries.jsonl + qrels/test.tsv (retrieval), "
        "pairs.jsonl (STS) or <pair>/sentences1.jsonl + sentences2.jsonl (bitext mining)"
    )


def discover_tasks(root: str | Path) -> list[Path]:
    """``root`` itself when it is a task folder, else its task sub-folders (sorted by name)."""
    path = Path(root)
    if not path.is_dir():
        raise InvalidInputError(f"task folder {path} does not exist")
    if _is_task(path):
        return [path]
    found = sorted(child for child in path.iterdir() if child.is_dir() and _is_task(child))
    if not found:
        raise InvalidInputError(f"no task folders (retrieval, bitext or STS layout) found in {path}")
    return found


def retrieval_splits(folder: str | Path) -> dict[str, str]:
    """Query language -> qrels split name: ``{"all": "test", "de": "test_de", ...}``.

    Only ``"all"`` when the folder has no per-language qrels files.
    """
    qrels = Path(folder) / "qrels"
    if not (qrels / "test.tsv").is_file():
        raise InvalidInputError(f"{folder} is not a BEIR-layout task: qrels/test.tsv is missing")
    splits = {ALL_LANGUAGES: "test"}
    for file in sorted(qrels.glob("test_*.tsv")):
        splits[file.stem.removeprefix("test_")] = file.stem
    return splits


def load_bitext_task(folder: str | Path) -> list[BitextPair]:
    """Every language pair of a bitext-mining folder (or the folder itself if it is one pair)."""
    path = Path(folder)
    pair_folders = bitext_pair_folders(path)
    if not pair_folders:
        raise InvalidInputError(f"{path} has no <pair>/sentences1.jsonl + sentences2.jsonl folders")
    pairs = []
    for pair_folder in pair_folders:
        first = _read_texts(pair_folder / "sentences1.jsonl", "text")
        second = _read_texts(pair_folder / "sentences2.jsonl", "text")
        if len(first) != len(second):
            raise InvalidInputError(
                f"{pair_folder}: sentences1.jsonl has {len(first)} lines but sentences2.jsonl has "
                f"{len(second)}; line i of both files must be a pair"
            )
        if not first:
            raise InvalidInputError(f"{pair_folder}: no sentence pairs")
        pairs.append(BitextPair(pair_folder.name, first, second))
    return pairs


def load_sts_task(folder: str | Path) -> STSPairs:
    path = Path(folder) / "pairs.jsonl"
    rows = _read_jsonl(path)
    if len(rows) < 2:
        raise InvalidInputError(f"{path}: an STS task needs at least 2 pairs, found {len(rows)}")
    first, second, scores = [], [], []
    for line_no, row in enumerate(rows, 1):
        for key in ("sentence1", "sentence2", "score"):
            if key not in row:
                raise InvalidInputError(f"{path}:{line_no}: missing {key!r}")
        score = row["score"]
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise InvalidInputError(f"{path}:{line_no}: score must be a finite number, got {score!r}")
        first.append(str(row["sentence1"]))
        second.append(str(row["sentence2"]))
        scores.append(float(score))
    return STSPairs(Path(folder).name, first, second, scores)


def _is_task(path: Path) -> bool:
    try:
        task_kind(path)
    except InvalidInputError:
        return False
    return True


def bitext_pair_folders(path: Path) -> list[Path]:
    """The language-pair folders of a bitext task (the folder itself if it holds one pair)."""
    if (path / "sentences1.jsonl").is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        child
        for child in path.iterdir()
        if (child / "sentences1.jsonl").is_file() and (child / "sentences2.jsonl").is_file()
    )


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{line_no}: malformed JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise InvalidInputError(f"{path}:{line_no}: expected a JSON object")
            rows.append(row)
    return rows


def _read_texts(path: Path, key: str) -> list[str]:
    texts = []
    for line_no, row in enumerate(_read_jsonl(path), 1):
        if key not in row:
            raise InvalidInputError(f"{path}:{line_no}: missing {key!r}")
        texts.append(str(row[key]))
    return texts
