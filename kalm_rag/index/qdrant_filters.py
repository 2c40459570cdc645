"""Translate the shared filter language (filters.py) into Qdrant's native filters.

qdrant-edge and qdrant-client have the same filter model (must / should / FieldCondition /
MatchValue / MatchAny / range) with different class names and constructor styles, so one
walk over the tree takes the engine's constructors as arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kalm_rag.index.filters import And, Eq, Filter, In, Or, Range, Scalar

Build = Callable[..., Any]


def _translate(
    node: Filter,
    *,
    make_filter: Build,
    make_field: Build,
    make_value: Build,
    make_any: Build,
    make_range: Build,
) -> Any:
    def condition(n: Filter) -> Any:
        if isinstance(n, Eq):
            return make_field(key=n.key, match=make_value(n.value))
        if isinstance(n, In):
            # _split_mixed_in has left only homogeneous str or int lists here
            return make_field(key=n.key, match=make_any(list(n.values)))
        if isinstance(n, Range):
            return make_field(key=n.key, range=make_range(gt=n.gt, gte=n.gte, lt=n.lt, lte=n.lte))
        return as_filter(n)

    def as_filter(n: Filter) -> Any:
        if isinstance(n, Or):
            return make_filter(should=[condition(c) for c in n.children])
        children = n.children if isinstance(n, And) else (n,)
        return make_filter(must=[condition(c) for c in children])

    return as_filter(node)


def _split_mixed_in(node: Filter) -> Filter:
    """Rewrite ``In`` nodes that Qdrant's MatchAny cannot hold into an ``Or`` of ``Eq``.

    MatchAny takes a homogeneous list of str or of int; mixed lists and booleans are expressed
    as a should-clause of single matches instead.
    """
    if isinstance(node, In):
        kinds = {type(v) for v in node.values}
        if not (kinds == {str} or kinds == {int}):
            return Or(tuple(Eq(node.key, v) for v in node.values))
        return node
    if isinstance(node, And):
        return And(tuple(_split_mixed_in(c) for c in node.children))
    if isinstance(node, Or):
        return Or(tuple(_split_mixed_in(c) for c in node.children))
    return node


def to_edge_filter(node: Filter) -> Any:
    """A ``qdrant_edge.Filter`` equivalent to ``node``."""
    import qdrant_edge as qe

    return _translate(
        _split_mixed_in(node),
        make_filter=qe.Filter,
        make_field=qe.FieldCondition,
        make_value=_edge_match_value,
        make_any=qe.MatchAny,
        make_range=qe.RangeFloat,
    )


def _edge_match_value(value: Scalar) -> Any:
    import numpy as np
    import qdrant_edge as qe

    # The binding extracts a Python bool as an int (bool subclasses int), so MatchValue(True)
    # would match the integer 1; numpy's bool is not an int and arrives as a JSON boolean.
    native: Any = np.bool_(value) if isinstance(value, bool) else value
    return qe.MatchValue(native)


def to_client_filter(node: Filter) -> Any:
    """A ``qdrant_client.models.Filter`` equivalent to ``node``."""
    from qdrant_client import models

    return _translate(
        _split_mixed_in(node),
        make_filter=models.Filter,
        make_field=models.FieldCondition,
        make_value=lambda value: models.MatchValue(value=value),
        make_any=lambda values: models.MatchAny(any=values),
        make_range=models.Range,
    )
