"""Shared fixtures: offline mode, real data paths, tiny models built from configs."""

from __future__ import annotations

import os

# Offline before anything imports huggingface_hub: tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = (REPO_ROOT / ".." / "shared").resolve()
DEV_DATA = SHARED / "data" / "dev"
TRAIN_DATA = SHARED / "data" / "train"


@pytest.fixture(scope="session")
def dev_data() -> Path:
    if not DEV_DATA.is_dir():
        pytest.skip(f"shared dev data not found at {DEV_DATA}")
    return DEV_DATA


@pytest.fixture(scope="session")
def real_corpus(dev_data: Path, pytestconfig: pytest.Config) -> dict:  # type: ignore[type-arg]
    """~6k real dev texts embedded with the packaged model, 300 real queries, and payloads at
    known selectivities (tests/real_embeddings.py); embeddings cached across sessions."""
    from tests.real_embeddings import load_real_corpus

    return load_real_corpus(dev_data, pytestconfig)


@pytest.fixture(scope="session")
def train_data() -> Path:
    if not (TRAIN_DATA / "debian_pairs.jsonl").is_file():
        pytest.skip(f"shared training data not found at {TRAIN_DATA}")
    return TRAIN_DATA


@pytest.fixture(scope="session")
def default_encoder():  # type: ignore[no-untyped-def]
    """The packaged all-MiniLM-L6-v2, loaded once per test session (float32 for exactness)."""
    from kalm_rag import Encoder

    return Encoder.from_pretrained(dtype="float32")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
