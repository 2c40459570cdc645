"""Training examples, their JSONL files, the pair converter and step configs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from kalm_trainer.data.config_base import StepConfig
from kalm_trainer.data.convert import TASK_INSTRUCTIONS, load_pairs
from kalm_trainer.data.jsonl import read_examples, write_examples
from kalm_trainer.data.mining import MineConfig
from kalm_trainer.data.schema import TaskType, TrainingExample, example_from_dict, example_to_dict
from kalm_trainer.synth.generate import SynthConfig

from kalm_rag.errors import ConfigError, InvalidInputError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"query": "q", "positives": ["p"], "negatives": ["n1", "n2"], "task": "t", "instruction": "Find it"}


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    ex = TrainingExample(
        query="what is apt",
        positives=("apt is a package manager",),
        negatives=("dpkg is lower level",),
        task="debian",
        task_type=TaskType.CLASSIFICATION,
        instruction="Classify it",
        label="tools",
        teacher_scores=(0.9, 0.1),
        meta={"lang": "en", "n": 3},
    )
    assert write_examples(tmp_path / "a.jsonl", [ex, ex]) == 2
    report = read_examples(tmp_path / "a.jsonl")
    assert report.examples == [ex, ex]
    assert example_from_dict(json.loads(json.dumps(example_to_dict(ex)))) == ex


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"query": ""}, "'query' must be a non-empty string"),
        ({"positives": "p"}, "'positives' must be a list"),
        ({"positives": []}, "'positives' is empty"),
        ({"positive": ["p"]}, "unknown key(s) ['positive']"),
        ({"task_type": "ranking"}, "unknown task_type 'ranking'"),
        ({"teacher_scores": [0.5]}, "'teacher_scores' has 1 values but there are 3"),
        ({"negatives": ["ok", ""]}, "'negatives' must be a list of non-empty strings"),
    ],
)
def test_malformed_line_names_file_line_and_problem(
    tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), json.dumps({**GOOD, **change})])
    with pytest.raises(InvalidInputError) as info:
        read_examples(path)
    assert f"{path}:2:" in str(info.value)
    assert problem in str(info.value)


def test_skip_mode_counts_every_bad_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "d.jsonl", [json.dumps(GOOD), "{not json", "", json.dumps({"x": 1}), json.dumps(GOOD)]
    )
    report = read_examples(path, on_error="skip")
    assert len(report.examples) == 2
    assert [e.line for e in report.skipped] == [2, 4]
    assert report.counts == {"read": 2, "skipped_malformed": 2, "blank_lines": 1}
    assert "invalid JSON" in report.skipped[0].problem


def test_labelled_example_may_wait_for_positives() -> None:
    ex = example_from_dict({"query": "great film", "label": 1, "task_type": "classification"})
    assert ex.positives == () and ex.label == "1"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    write_examples(target, [example_from_dict(GOOD)])

    def broken() -> object:
        yield example_from_dict(GOOD)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_examples(target, broken())  # type: ignore[arg-type]
    assert len(read_examples(target).examples) == 1  # the old complete file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_load_pairs_on_the_shared_training_data(train_data: Path) -> None:
    report = load_pairs(train_data / "debian_pairs.jsonl")
    with open(train_data / "debian_pairs.jsonl", encoding="utf-8") as handle:
        raw = [json.loads(line) for line in handle]
    assert len(report.examples) == len(raw) and not report.skipped
    first = report.examples[0]
    assert first.query == raw[0]["query"] and first.positives == (raw[0]["positive"],)
    assert first.task == "debian-desc" and first.task_type is TaskType.RETRIEVAL
    assert first.instruction == TASK_INSTRUCTIONS["debian-desc"]
    assert first.meta == {"lang": raw[0]["lang"], "package": raw[0]["package"]}
    assert {ex.meta["lang"] for ex in report.examples} >= {"en", "de", "zh_CN"}


def test_load_pairs_reports_missing_positive(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "p.jsonl", [json.dumps({"query": "a", "positive": "b", "task": "t"}), '{"query": "a"}']
    )
    with pytest.raises(InvalidInputError, match=r"p\.jsonl:2: missing or non-string 'positive'"):
        load_pairs(path)
    assert len(load_pairs(path, on_error="skip").examples) == 1


def test_step_config_from_mapping() -> None:
    config = MineConfig.from_mapping({"n": 3, "window": [10, 20]})
    assert config == MineConfig(n=3, window=(10, 20))
    assert config.to_dict() == {**MineConfig().to_dict(), "n": 3, "window": [10, 20]}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['windw'\].*valid keys"):
        MineConfig.from_mapping({"windw": [1, 2]})
    with pytest.raises(ConfigError, match="n: Input should be a valid integer"):
        MineConfig.from_mapping({"n": "many"})
    with pytest.raises(ConfigError, match="window must be"):
        MineConfig.from_mapping({"window": [100, 50]})


def test_nested_config_rejects_unknown_keys() -> None:
    config = SynthConfig.from_mapping({"llm": {"backend": "openai", "base_url": "http://x/v1", "model": "m"}})
    assert config.llm.backend == "openai"
    with pytest.raises(ConfigError, match=r"unknown key 'llm\.temprature'"):
        SynthConfig.from_mapping({"llm": {"temprature": 0.1}})


def test_step_config_mixin_on_a_new_config() -> None:
    @dataclass(frozen=True)
    class Tiny(StepConfig):
        size: int = 1

    assert Tiny.from_mapping({"size": 2}).size == 2
