"""LlamaIndex ``MetadataFilters`` -> kalm_rag's shared filter language (same on every backend).

Supported: ``==`` (a float becomes the closed range [v, v], since floats cannot be matched
exactly), ``>``, ``>=``, ``<``, ``<=``, ``in``, ``any`` (a list field holding any of the
values), ``all`` (holding all of them), ``contains`` (holding the value), and the ``and`` /
``or`` conditions, nested. Negations (``!=``, ``nin``, ``not``), text matching and
``is_empty`` have no counterpart in the shared language and raise ``InvalidInputError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from kalm_rag.errors import InvalidInputError
from kalm_rag.index.filters import And, Field, Filter, In, Or, Scalar

_RANGES = {
    FilterOperator.GT: "gt",
    FilterOperator.GTE: "gte",
    FilterOperator.LT: "lt",
    FilterOperator.LTE: "lte",
}
SUPPORTED_OPERATORS = ("==", ">", ">=", "<", "<=", "in", "any", "all", "contains")


def to_kalm_filter(filters: MetadataFilters | None) -> Filter | None:
    """Translate ``filters``; ``None`` or an empty filter list means "no filter"."""
    if filters is None or not filters.filters:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise InvalidInputError(f"filter condition {condition.value!r} is not supported; use 'and' or 'or'")
    children = [
        child
        for item in filters.filters
        if (child := to_kalm_filter(item) if isinstance(item, MetadataFilters) else _leaf(item)) is not None
    ]
    if not children:
        return None
    if len(children) == 1:
        return children[0]
    return And(tuple(children)) if condition == FilterCondition.AND else Or(tuple(children))


def restrict_to_documents(node: Filter | None, doc_ids: Sequence[str] | None) -> Filter | None:
    """Add ``ref_doc_id in doc_ids`` (the key LlamaIndex stores for every node) to ``node``."""
    if not doc_ids:
        return node
    by_document = In("ref_doc_id", tuple(str(d) for d in doc_ids))
    return by_document if node is None else And((node, by_document))


def _leaf(item: MetadataFilter) -> Filter:
    field, op, value = Field(item.key), item.operator, item.value
    if op == FilterOperator.EQ:
        if isinstance(value, float):
            return field.range(gte=value, lte=value)
        return field == _scalar(item)
    if op in _RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"filter on {item.key!r}: {op.value!r} needs a number, got {value!r}")
        return field.range(**{_RANGES[op]: value})
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return field.is_in(_values(item))
    if op == FilterOperator.ALL:
        return And(tuple(field == v for v in _values(item)))
    if op == FilterOperator.CONTAINS:  # a list-valued field matches when any element matches
        return field == _scalar(item)
    raise InvalidInputError(
        f"filter operator {op.value!r} on {item.key!r} is not supported by kalm_rag indexes; "
        f"supported: {', '.join(SUPPORTED_OPERATORS)}"
    )


def _scalar(item: MetadataFilter) -> Scalar:
    if not isinstance(item.value, str | int):  # bool is an int
        raise InvalidInputError(
            f"filter on {item.key!r}: {item.operator.value!r} needs one str, int or bool value, "
            f"got {item.value!r}"
        )
    return item.value


def _values(item: MetadataFilter) -> list[Any]:
    if not isinstance(item.value, list) or not item.value:
        raise InvalidInputError(
            f"filter on {item.key!r}: {item.operator.value!r} needs a non-empty list, got {item.value!r}"
        )
    return list(item.value)
