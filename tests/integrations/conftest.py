"""Fixtures shared by the integration tests: a tiny KaLM-style model and real retrieval data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """These tests embed a query or a few texts at a time; on a shared 2-core machine two torch
    threads wait on each other at every op (1 s per query instead of 30 ms), so use one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kalm_config() -> Any:
    """The published KaLM v2 config: the instruction template applies to the tiny Qwen2."""
    from kalm_rag.registry import REGISTRY

    return REGISTRY["kalm-v2"].config


@pytest.fixture(scope="session")
def tiny_kalm_encoder(tiny_qwen2_dir: Path, kalm_config: Any) -> Any:
    from kalm_rag import Encoder

    return Encoder.from_pretrained(tiny_qwen2_dir, config=kalm_config, dtype="float32")


@dataclass(frozen=True)
class RetrievalSample:
    """A slice of DebianDescRetrieval: English queries and a corpus holding their answers."""

    corpus: dict[str, str]
    queries: dict[str, str]
    answers: dict[str, set[str]]  # query id -> relevant doc ids


@pytest.fixture(scope="session")
def debian_sample(dev_data: Path) -> RetrievalSample:
    """20 English queries, their answers and unrelated documents (48 in all), each document cut to
    its first 300 characters: real text, small enough for a loaded 2-core machine."""
    from kalm_rag.beir import load_retrieval_task

    task = load_retrieval_task(dev_data / "DebianDescRetrieval", split="test_en")
    query_ids = sorted(task.queries)[:20]
    answers = {q: {d for d, rel in task.qrels[q].items() if rel > 0} for q in query_ids}
    wanted = set().union(*answers.values())
    fillers = [d for d in sorted(task.corpus) if d not in wanted][: max(0, 48 - len(wanted))]
    corpus = {d: task.corpus[d][:300] for d in sorted(wanted) + fillers}
    return RetrievalSample(corpus, {q: task.queries[q] for q in query_ids}, answers)
