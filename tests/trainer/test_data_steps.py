"""The step registry: run from a config mapping, manifests, resume/skip, and a real chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kalm_trainer.data.jsonl import read_examples
from kalm_trainer.data.manifest import MANIFEST_NAME, load_manifest
from kalm_trainer.data.steps import STEPS, parse_step_config, run_step

from kalm_rag.errors import ConfigError, InvalidInputError


@pytest.fixture
def pairs(train_data: Path, tmp_path: Path) -> Path:
    """The first 300 shared training pairs (a few of each language)."""
    path = tmp_path / "pairs.jsonl"
    with open(train_data / "debian_pairs.jsonl", encoding="utf-8") as handle:
        path.write_text("".join(line for line, _ in zip(handle, range(300), strict=False)), encoding="utf-8")
    return path


def test_registry_lists_every_step() -> None:
    assert set(STEPS) == {
        "convert_pairs",
        "synthesize",
        "personas_from_corpus",
        "filter_ranking",
        "mine_negatives",
        "label_examples",
    }
    for name, step in STEPS.items():
        assert isinstance(parse_step_config(name, {}), step.config_type) or name == "synthesize"


def test_manifest_records_config_inputs_outputs_and_counts(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    manifest = run_step("convert_pairs", {"task": "debian"}, [pairs], out)
    assert not manifest.skipped
    on_disk = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert on_disk["step"] == "convert_pairs" and on_disk["config"]["task"] == "debian"
    assert on_disk["inputs"][0]["path"] == str(pairs) and len(on_disk["inputs"][0]["sha256"]) == 64
    assert set(on_disk["outputs"]) == {"examples.jsonl"}
    assert on_disk["stats"]["read"] == on_disk["stats"]["written"] == 300
    examples = read_examples(manifest.output_path()).examples
    assert len(examples) == 300 and {ex.task for ex in examples} == {"debian"}


def test_same_config_and_inputs_skip_anything_else_reruns(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    first = run_step("convert_pairs", {}, [pairs], out)
    mtime = (out / "examples.jsonl").stat().st_mtime_ns
    again = run_step("convert_pairs", {}, [pairs], out)
    assert again.skipped and again == first and (out / "examples.jsonl").stat().st_mtime_ns == mtime

    assert not run_step("convert_pairs", {"instruction": "Find the long text"}, [pairs], out).skipped
    assert not run_step("convert_pairs", {}, [pairs], out).skipped  # back to the first config: rerun
    assert run_step("convert_pairs", {}, [pairs], out).skipped

    with open(pairs, "a", encoding="utf-8") as handle:  # new input content
        handle.write(json.dumps({"query": "new", "positive": "line", "task": "debian-desc"}) + "\n")
    rerun = run_step("convert_pairs", {}, [pairs], out)
    assert not rerun.skipped and rerun.stats["written"] == 301

    (out / "examples.jsonl").write_text("damaged\n", encoding="utf-8")  # damaged output
    assert not run_step("convert_pairs", {}, [pairs], out).skipped
    assert not run_step("convert_pairs", {}, [pairs], out, force=True).skipped


def test_failed_step_leaves_the_previous_output(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    run_step("convert_pairs", {}, [pairs], out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "only a query"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:1: missing or non-string 'positive'"):
        run_step("convert_pairs", {}, [bad], out)
    assert load_manifest(out) is not None and load_manifest(out).inputs[0]["path"] == str(pairs)  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "converted", "pairs.jsonl"]
    skipped = run_step("convert_pairs", {"on_error": "skip"}, [bad], out)
    assert skipped.stats["skipped_malformed"] == 1 and skipped.stats["written"] == 0


def test_config_and_input_errors(pairs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data step 'mine'"):
        run_step("mine", {}, [pairs], tmp_path / "x")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['topk'\] in config of step 'filter_ranking'"):
        run_step("filter_ranking", {"topk": 5}, [pairs], tmp_path / "x")
    with pytest.raises(InvalidInputError, match="not found"):
        run_step("convert_pairs", {}, [tmp_path / "missing.jsonl"], tmp_path / "x")
    with pytest.raises(ConfigError, match="takes a ConvertPairsConfig"):
        run_step("convert_pairs", parse_step_config("mine_negatives", {}), [pairs], tmp_path / "x")


def test_label_step(tmp_path: Path) -> None:
    rows = [{"query": f"{label} text {i}", "label": label, "task_type": "clustering", "task": "topics"}
            for label in ("a", "b", "c") for i in range(4)]  # fmt: skip
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    manifest = run_step("label_examples", {"n_negatives": 3, "seed": 1}, [data], tmp_path / "out")
    examples = read_examples(manifest.output_path()).examples
    assert manifest.stats["labelled"] == len(examples) == 12
    assert all(ex.positives[0].split()[0] == ex.label for ex in examples)
    assert all(n.split()[0] != ex.label for ex in examples for n in ex.negatives)


@pytest.mark.slow
def test_real_chain_convert_filter_mine(pairs: Path, tmp_path: Path) -> None:
    converted = run_step("convert_pairs", {}, [pairs], tmp_path / "1-convert")
    filtered = run_step("filter_ranking", {"top_k": 50}, [converted.output_path()], tmp_path / "2-filter")
    stats = filtered.stats
    assert stats["read"] == 300 and stats["written"] + stats["dropped"] == 300
    assert stats["dropped_per_task"]["debian-desc"] == stats["dropped"] > 0
    mined = run_step(
        "mine_negatives", {"n": 7, "window": [30, 80]}, [filtered.output_path()], tmp_path / "3-mine"
    )
    examples = read_examples(mined.output_path()).examples
    assert len(examples) == stats["written"]
    assert all(len(ex.negatives) == 7 and not set(ex.negatives) & set(ex.positives) for ex in examples)
    assert run_step(
        "mine_negatives", {"n": 7, "window": [30, 80]}, [filtered.output_path()], tmp_path / "3-mine"
    ).skipped


def test_filter_and_mine_take_a_max_length_and_count_what_it_cuts(pairs: Path, tmp_path: Path) -> None:
    converted = run_step("convert_pairs", {}, [pairs], tmp_path / "1-convert")
    short = run_step(
        "filter_ranking", {"top_k": 50, "max_length": 16}, [converted.output_path()], tmp_path / "f16"
    )
    full = run_step("filter_ranking", {"top_k": 50}, [converted.output_path()], tmp_path / "full")
    # Debian long descriptions run to hundreds of tokens: at 16 nearly every one is cut
    assert short.stats["texts_truncated"] > 250 > full.stats["texts_truncated"]
    mined = run_step("mine_negatives", {"n": 2, "window": [5, 20], "max_length": 16},
                     [short.output_path()], tmp_path / "m16")  # fmt: skip
    assert mined.stats["texts_truncated"] > 250
    for step in ("filter_ranking", "mine_negatives"):
        with pytest.raises(ConfigError, match="max_length must be >= 1, got 0"):
            parse_step_config(step, {"max_length": 0})
