"""Model soup: averaging correctness, clear errors, and the folder shell on tiny BERT checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kalm_trainer.soup import average_state_dicts, normalize_weights, soup_checkpoints
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from kalm_rag._atomic import MARKER
from kalm_rag.errors import InvalidInputError


def state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 2, generator=g),
        "half": torch.randn(4, generator=g).to(torch.bfloat16),
        "position_ids": torch.arange(5) + seed,  # an integer buffer
    }


def test_uniform_average() -> None:
    states = [state(0), state(1), state(2)]
    soup = average_state_dicts(states)
    torch.testing.assert_close(soup["w"], (states[0]["w"] + states[1]["w"] + states[2]["w"]) / 3)
    assert soup["half"].dtype == torch.bfloat16
    expected_half = sum(s["half"].double() for s in states) / 3
    torch.testing.assert_close(soup["half"], expected_half.to(torch.bfloat16))
    assert torch.equal(soup["position_ids"], states[0]["position_ids"])


def test_weighted_average_is_normalised() -> None:
    a, b = state(0), state(1)
    soup = average_state_dicts([a, b], [1.0, 3.0])
    torch.testing.assert_close(soup["w"], 0.25 * a["w"] + 0.75 * b["w"])
    scaled = average_state_dicts([a, b], [2.0, 6.0])
    assert torch.equal(scaled["w"], soup["w"])
    assert torch.equal(average_state_dicts([a])["w"], a["w"])
    assert normalize_weights([1, 1, 2], 3) == [0.25, 0.25, 0.5]


def test_mismatched_keys_and_shapes_name_the_keys() -> None:
    a, b = state(0), state(1)
    del b["half"]
    b["extra.bias"] = torch.zeros(1)
    with pytest.raises(InvalidInputError, match=r"missing keys \['half'\].*unexpected keys \['extra.bias'\]"):
        average_state_dicts([a, b])
    c = state(2)
    c["w"] = torch.zeros(2, 3)
    with pytest.raises(InvalidInputError, match=r"w: \(3, 2\) vs \(2, 3\)"):
        average_state_dicts([a, c])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "2 checkpoints"),
        ([1.0, 0.0], "positive"),
        ([1.0, -2.0], "positive"),
        ([1.0, float("inf")], "finite"),
    ],
)
def test_bad_weights_are_clear_errors(weights: list[float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        average_state_dicts([state(0), state(1)], weights)


def test_no_checkpoints_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="at least one"):
        average_state_dicts([])


def tiny_checkpoint(folder: Path, seed: int, **save_kwargs: object) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    model = BertModel(config)
    model.save_pretrained(folder, **save_kwargs)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "optimizer.pt").write_bytes(b"trainer state, not part of a model")
    return model


def test_soup_of_model_folders(tmp_path: Path) -> None:
    first = tiny_checkpoint(tmp_path / "a", seed=0)
    second = tiny_checkpoint(tmp_path / "b", seed=1, max_shard_size="2KB")
    assert (tmp_path / "b" / "model.safetensors.index.json").is_file()  # a sharded checkpoint
    out = soup_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "soup", weights=[3, 1])
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER) == [  # MARKER: written by kalm-rag
        "1_Pooling",
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]
    assert json.loads((out / "1_Pooling" / "config.json").read_text()) == {"pooling_mode_mean_tokens": True}
    merged = BertModel.from_pretrained(out)
    one, two = first.state_dict(), second.state_dict()
    for key, value in merged.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * one[key] + 0.25 * two[key])
    assert not list(tmp_path.glob(".soup.tmp-*"))  # the temporary folder was renamed into place
    assert set(load_file(out / "model.safetensors")) == set(load_file(tmp_path / "a" / "model.safetensors"))


def test_folder_errors_name_the_problem(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path / "a", seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"empty has no model.safetensors"):
        soup_checkpoints([tmp_path / "a", tmp_path / "empty"], tmp_path / "soup")
    with pytest.raises(InvalidInputError, match="does not exist"):
        soup_checkpoints([tmp_path / "missing", tmp_path / "a"], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()
    assert not list(tmp_path.glob(".soup.*"))
