"""Example-based labelling of classification / clustering data."""

from __future__ import annotations

from kalm_trainer.data.labelling import label_examples
from kalm_trainer.data.schema import TaskType, TrainingExample


def labelled(text: str, label: str, task: str = "topics") -> TrainingExample:
    return TrainingExample(text, task=task, task_type=TaskType.CLASSIFICATION, label=label)


TEXTS = {
    "sports": ["the match ended in a draw", "a late goal won the cup", "the team signed a striker"],
    "finance": ["shares fell sharply", "the bank raised rates", "bond yields climbed"],
    "weather": ["heavy rain is expected", "a heatwave hits the south"],
}


def data() -> list[TrainingExample]:
    return [labelled(t, label) for label, texts in TEXTS.items() for t in texts]


def test_positives_share_the_label_and_negatives_do_not() -> None:
    examples = data()
    result = label_examples(examples, n_positives=1, n_negatives=4, seed=0)
    label_of = {t: label for label, texts in TEXTS.items() for t in texts}
    assert len(result.examples) == len(examples) == result.counts["labelled"]
    for ex in result.examples:
        assert len(ex.positives) == 1 and ex.positives[0] != ex.query
        assert label_of[ex.positives[0]] == ex.label
        assert len(ex.negatives) == 4 and all(label_of[n] != ex.label for n in ex.negatives)
        assert len(set(ex.negatives)) == 4  # 5+ texts of other labels: no repeats needed


def test_short_supply_is_padded_and_singletons_are_dropped() -> None:
    examples = [
        labelled("a1", "a"),
        labelled("a2", "a"),
        labelled("b1", "b"),
        labelled("lonely", "c", task="other"),
    ]
    result = label_examples(examples, n_positives=2, n_negatives=3, seed=1)
    # b1 and "lonely" (alone in its task) have no other text of their label: no positive
    assert [ex.query for ex in result.examples] == ["a1", "a2"]
    assert result.counts["dropped_single_text_label"] == 2
    a1, a2 = result.examples
    assert a1.positives == ("a2",) and a2.positives == ("a1",)  # fewer than asked: all there is
    assert a1.negatives == ("b1", "b1", "b1")  # labelling is per task: "lonely" is not a candidate
    assert result.counts["padded_with_duplicates"] == 2


def test_deterministic_and_order_preserving() -> None:
    examples = data()
    first = label_examples(examples, seed=3).examples
    assert first == label_examples(examples, seed=3).examples
    assert first != label_examples(examples, seed=4).examples
    assert [ex.query for ex in first] == [ex.query for ex in examples]


def test_unlabelled_or_ready_examples_pass_through() -> None:
    ready = TrainingExample("q", ("p",), task="topics")
    result = label_examples([ready, *data()], seed=0)
    assert result.examples[0] is ready and result.counts["passed_through"] == 1
