"""Joining a GGUF shipped in parts into the cache, with a checksum (how Qwen2.5-Coder-1.5B is
installed from its 22 PyPI parts), on a small fake split file set."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from kalm_trainer.synth.gguf import cached_joined_gguf

from kalm_rag.errors import ModelNotFoundError


def fake_parts(folder: Path, count: int = 4, size: int = 10_000) -> tuple[list[Path], bytes]:
    data = b"GGUF" + os.urandom(count * size - 4)
    parts = []
    for number in range(count):
        part = folder / f"part{number + 1:02d}.bin"
        part.write_bytes(data[number * size : (number + 1) * size])
        parts.append(part)
    return parts, data


def test_parts_join_once_into_the_cache_with_a_checksum(tmp_path: Path) -> None:
    parts, data = fake_parts(tmp_path)
    cache = tmp_path / "cache"
    joined = cached_joined_gguf(parts, "model.gguf", cache_dir=cache)
    assert joined == cache / "model.gguf" and joined.read_bytes() == data
    record = json.loads((cache / "model.gguf.sha256.json").read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["size"] == len(data) and record["part_sizes"] == [10_000] * 4
    assert {p.name for p in cache.iterdir()} == {"model.gguf", "model.gguf.sha256.json"}  # no temp files

    stamp = joined.stat().st_mtime_ns
    assert cached_joined_gguf(parts, "model.gguf", cache_dir=cache).stat().st_mtime_ns == stamp  # reused


def test_a_damaged_cached_file_is_joined_again(tmp_path: Path) -> None:
    parts, data = fake_parts(tmp_path)
    cache = tmp_path / "cache"
    joined = cached_joined_gguf(parts, "model.gguf", cache_dir=cache)
    damaged = bytearray(data)
    damaged[5000] ^= 0xFF  # same size, one flipped byte: only the checksum sees it
    joined.write_bytes(bytes(damaged))
    assert cached_joined_gguf(parts, "model.gguf", cache_dir=cache).read_bytes() == data
    # without verification the size check still catches a truncated file
    joined.write_bytes(data[:-10])
    assert cached_joined_gguf(parts, "model.gguf", cache_dir=cache, verify=False).read_bytes() == data


def test_changed_parts_or_a_wrong_digest_are_caught(tmp_path: Path) -> None:
    parts, data = fake_parts(tmp_path)
    cache = tmp_path / "cache"
    expected = hashlib.sha256(data).hexdigest()
    cached_joined_gguf(parts, "model.gguf", cache_dir=cache, expected_sha256=expected)
    parts[-1].write_bytes(parts[-1].read_bytes() + b"new version")  # a part changed size
    with pytest.raises(ModelNotFoundError, match="corrupt or of another version"):
        cached_joined_gguf(parts, "model.gguf", cache_dir=cache, expected_sha256=expected)
    assert not (cache / "model.gguf").exists()  # a bad join is not left behind
    with pytest.raises(ModelNotFoundError, match="GGUF magic"):
        cached_joined_gguf(parts[1:], "other.gguf", cache_dir=cache)
    with pytest.raises(ModelNotFoundError, match="missing"):
        cached_joined_gguf([tmp_path / "nope.bin"], "x.gguf", cache_dir=cache)
