"""Helpers shared by the trainer tests (model, trainer, recipe, e2e, resume); holds no tests."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.tiny_models import WORDS


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine two spinning threads ran 5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def word_text(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


def write_word_pairs(path: Path, *, per_task: int, tasks: tuple[str, ...] = ("alpha", "beta"), seed: int = 0,
                     negatives: int = 0) -> Path:  # fmt: skip
    """Pairs over the tiny tokenizers' vocabulary: the positive repeats words of the query, so a
    model can learn the pairing; ``negatives`` adds other pairs' positives as given negatives."""
    rng = random.Random(seed)
    rows = []
    for task in tasks:
        for _ in range(per_task):
            query = word_text(rng, 4)
            rows.append({"query": query, "positive": f"{query} {word_text(rng, 6)}", "task": task})
    for row in rows:
        others = [r["positive"] for r in rows if r["task"] == row["task"] and r is not row]
        if negatives:
            row["negatives"] = rng.sample(others, negatives)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_debian_pairs(path: Path, train_file: Path, *, per_lang: int, langs: tuple[str, ...]) -> Path:
    """Real training pairs, one task per language (so task batching has tasks to choose from)."""
    counts = dict.fromkeys(langs, 0)
    rows = []
    with train_file.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if counts.get(row["lang"], per_lang) < per_lang:
                counts[row["lang"]] += 1
                rows.append({**row, "task": f"debian-desc-{row['lang']}"})
            if all(c >= per_lang for c in counts.values()):
                break
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
