"""The shared filter language: parsing, the pure evaluator, and the Qdrant translations."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kalm_rag.errors import InvalidInputError
from kalm_rag.index.filters import And, Eq, Field, In, Or, Range, matches, parse_filter
from kalm_rag.index.qdrant_filters import to_client_filter, to_edge_filter


def test_dict_forms_parse_to_the_same_tree_as_field_objects() -> None:
    assert parse_filter({"lang": "en"}) == (Field("lang") == "en")
    assert parse_filter({"year": {"gte": 2000, "lt": 2010}}) == Range("year", gte=2000.0, lt=2010.0)
    assert parse_filter({"tag": {"in": ["a", "b"]}}) == Field("tag").is_in(["a", "b"])
    assert parse_filter({"a": 1, "b": {"gt": 2}}) == And((Eq("a", 1), Range("b", gt=2.0)))
    assert parse_filter({"$or": [{"a": 1}, {"b": "x"}]}) == (Field("a") == 1) | (Field("b") == "x")
    assert parse_filter({"a": {"eq": 1, "in": [1, 2]}}) == And((Eq("a", 1), In("a", (1, 2))))
    assert parse_filter(None) is None and parse_filter({}) is None
    node = Field("x") >= 1
    assert parse_filter(node) is node


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": [1, 2]}, "use {'in': [...]}"),
        ({"a": 1.5}, "floats cannot be matched exactly"),
        ({"a": None}, "must be str, int or bool"),
        ({"a": {"in": []}}, "non-empty list"),
        ({"a": {"gte": "2000"}}, "bound must be a number"),
        ({"a": {"gte": float("nan")}}, "NaN"),
        ({"a": {"like": "x"}}, "unknown operator"),
        ({"a": {}}, "unknown operator"),
        ({"$not": {"a": 1}}, "unknown filter operator '$not'"),
        ({"$or": []}, "non-empty list of filters"),
        ({"$or": [{}]}, "empty filter"),
        ({"": 1}, "non-empty strings"),
        ("lang=en", "must be a dict or a Filter"),
    ],
)
def test_malformed_filters_name_the_problem(spec: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse_filter(spec)


def test_combining_with_non_filters_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="can only combine filters"):
        (Field("a") == 1) & {"b": 2}  # type: ignore[operator]


@pytest.mark.parametrize(
    ("spec", "payload", "expected"),
    [
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": True}, False),  # True is not 1 in a payload filter
        ({"a": True}, {"a": 1}, False),
        ({"a": True}, {"a": True}, True),
        ({"a": 1}, {"a": 1.0}, False),  # integer match needs an integer
        ({"a": "1"}, {"a": 1}, False),
        ({"a": "x"}, {"a": ["y", "x"]}, True),  # any element of a list
        ({"a": {"in": ["p", "q"]}}, {"a": ["x", "q"]}, True),
        ({"a": {"gte": 2}}, {"a": [1, 3]}, True),
        ({"a": {"gte": 2}}, {"a": True}, False),  # ranges compare numbers only
        ({"a": {"gte": 2}}, {"a": "3"}, False),
        ({"a": {"lt": 2.5}}, {"a": 2.4}, True),
        ({"a": "x"}, {}, False),
        ({"a": "x"}, None, False),
        ({"a.b": 3}, {"a": {"b": 3}}, True),
        ({"a.b": 3}, {"a": {"c": 3}}, False),
        ({"$or": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
        ({"$and": [{"a": 1}, {"b": 2}]}, {"b": 2}, False),
    ],
)
def test_evaluator_semantics(spec: Any, payload: Any, expected: bool) -> None:
    node = parse_filter(spec)
    assert node is not None
    assert matches(node, payload) is expected


def test_translations_build_native_qdrant_filters() -> None:
    from qdrant_client import models

    node = parse_filter({"lang": "en", "$or": [{"year": {"gte": 2000}}, {"tag": {"in": ["a", 1, True]}}]})
    assert node is not None

    def match(key: str, value: Any) -> Any:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    # a mixed-type "in" becomes a should-clause of single matches (MatchAny is homogeneous)
    expected = models.Filter(
        must=[
            match("lang", "en"),
            models.Filter(
                should=[
                    models.FieldCondition(key="year", range=models.Range(gte=2000.0)),
                    models.Filter(should=[match("tag", "a"), match("tag", 1), match("tag", True)]),
                ]
            ),
        ]
    )
    assert to_client_filter(node) == expected
    assert to_client_filter(In("t", ("a", "b"))) == models.Filter(
        must=[models.FieldCondition(key="t", match=models.MatchAny(any=["a", "b"]))]
    )
    edge: Any = to_edge_filter(node)
    assert type(edge).__name__ == "Filter" and len(edge.must) == 2
    assert isinstance(Or((Eq("a", 1),)), Or)
