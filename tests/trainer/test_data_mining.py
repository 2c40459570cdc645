"""Hard-negative mining: the pure sampler on hand-made rankings, then real mining with the
packaged MiniLM over the shared Debian training pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kalm_trainer.data.convert import load_pairs
from kalm_trainer.data.embedding import build_pool
from kalm_trainer.data.mining import mine_hard_negatives, sample_negatives
from kalm_trainer.data.schema import TrainingExample

from kalm_rag import Encoder
from kalm_rag.errors import ConfigError


def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_samples_only_from_the_window_and_never_positives() -> None:
    ranking = list(range(100))
    for seed in range(20):
        mined = sample_negatives(
            ranking, n=7, window=(50, 100), exclude={55, 60, 99}, rng=np.random.default_rng(seed)
        )
        assert len(mined.ids) == 7 == len(set(mined.ids)) == mined.mined and mined.duplicated == 0
        assert all(50 <= i < 100 for i in mined.ids)
        assert not {55, 60, 99} & set(mined.ids)


def test_given_negatives_stay_first_and_are_not_repeated() -> None:
    mined = sample_negatives(list(range(20)), n=4, window=(5, 20), exclude={6}, given=[7, 3], rng=rng())
    assert mined.ids[:2] == (7, 3)
    assert len(set(mined.ids)) == 4 and 6 not in mined.ids


def test_short_window_is_padded_by_resampling() -> None:
    # window 2..5 of a 5-item ranking holds 3 ids, one is a positive -> 2 candidates for 5 slots
    mined = sample_negatives([4, 3, 2, 1, 0], n=5, window=(2, 5), exclude={1}, rng=rng())
    assert len(mined.ids) == 5 and set(mined.ids) == {2, 0}
    assert mined.mined == 2 and mined.duplicated == 3


def test_empty_window_pads_with_given_or_returns_nothing() -> None:
    assert sample_negatives([0, 1], n=3, window=(5, 10), exclude=set(), given=[9], rng=rng()).ids == (9, 9, 9)
    assert sample_negatives([0, 1], n=3, window=(5, 10), exclude=set(), rng=rng()).ids == ()


def test_bad_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="window"):
        sample_negatives([1], n=1, window=(5, 5), exclude=set(), rng=rng())


@pytest.fixture(scope="module")
def debian_examples(train_data: Path) -> list[TrainingExample]:
    examples = load_pairs(train_data / "debian_pairs.jsonl").examples[:300]
    # one example with a given negative, to check it stays first
    examples[0] = examples[0].with_negatives([examples[1].positives[0]])
    return examples


@pytest.mark.slow
def test_real_mining_with_minilm(default_encoder: Encoder, debian_examples: list[TrainingExample]) -> None:
    examples = debian_examples
    window = (20, 60)
    result = mine_hard_negatives(examples, default_encoder, n=7, window=window, seed=5, device="cpu")
    assert len(result.examples) == len(examples)
    pool = build_pool(examples)
    assert len(pool.texts) > window[1]
    # reference ranking computed here, independently of the chunked search
    queries = default_encoder.encode_query([ex.query for ex in examples])
    scores = queries @ default_encoder.encode_document(list(pool.texts)).T
    order = np.argsort(-scores, axis=1)
    for row, (before, after) in enumerate(zip(examples, result.examples, strict=True)):
        assert after.query == before.query and after.positives == before.positives
        assert len(after.negatives) == 7
        assert not set(after.negatives) & set(before.positives)
        assert before.query not in after.negatives
        assert after.negatives[: len(before.negatives)] == before.negatives
        for text in after.negatives[len(before.negatives) :]:
            rank = int(np.where(order[row] == pool.ids[text])[0][0])
            assert window[0] - 2 <= rank < window[1] + 2  # +-2: float near-ties between the two rankings
    assert result.counts["mined"] == 7 * len(examples) - 1
    assert result.counts["examples_padded_with_duplicates"] == 0
    again = mine_hard_negatives(examples[:40], default_encoder, n=7, window=window, seed=5, device="cpu")
    other = mine_hard_negatives(examples[:40], default_encoder, n=7, window=window, seed=6, device="cpu")
    assert (
        again.examples
        == mine_hard_negatives(examples[:40], default_encoder, n=7, window=window, seed=5).examples
    )
    assert again.examples != other.examples
