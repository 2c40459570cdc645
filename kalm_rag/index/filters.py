"""One small payload-filter language for every backend: equality, membership, ranges, and/or.

Two ways to write a filter::

    {"lang": "en"}                                   # equality shorthand
    {"year": {"gte": 2000, "lt": 2020}}              # range (gt, gte, lt, lte)
    {"tag": {"in": ["cli", "net"]}}                  # membership
    {"lang": "en", "year": {"gte": 2000}}            # several keys: all must hold
    {"$or": [{"lang": "en"}, {"lang": "de"}]}        # any of; "$and" is all of

    (Field("lang") == "en") & (Field("year") >= 2000) | Field("tag").is_in(["cli"])

Semantics (identical in the pure evaluator and in Qdrant, which the contract tests check):
a missing field matches nothing; a list-valued field matches when any element matches;
strings, integers and booleans never equal one another (``True`` is not ``1``); ranges compare
numbers only; a dotted key ``"a.b"`` reaches into nested objects. Floats cannot be matched
for equality (use a range), as in Qdrant.

``parse_filter`` turns either form into a tree of frozen ``Filter`` nodes; ``matches``
evaluates a tree against one payload (used by the exact and hnswlib backends);
``kalm_rag.index.qdrant_filters`` translates a tree into Qdrant's native filters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from kalm_rag.errors import InvalidInputError

Scalar: TypeAlias = str | int | bool
_RANGE_OPS = ("gt", "gte", "lt", "lte")
_FIELD_OPS = ("eq", "in", *_RANGE_OPS)


class Filter:
    """Base of every filter node; ``a & b`` and ``a | b`` combine nodes."""

    def __and__(self, other: Filter) -> Filter:
        return And((self, _as_node(other)))

    def __or__(self, other: Filter) -> Filter:
        return Or((self, _as_node(other)))


@dataclass(frozen=True)
class Eq(Filter):
    key: str
    value: Scalar


@dataclass(frozen=True)
class In(Filter):
    key: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range(Filter):
    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class And(Filter):
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Or(Filter):
    children: tuple[Filter, ...]


class Field:
    """Builder for conditions on one payload field: ``Field("year") >= 2000``."""

    def __init__(self, key: str) -> None:
        self.key = _check_key(key)

    def __eq__(self, value: object) -> Eq:  # type: ignore[override]
        return Eq(self.key, _check_scalar(self.key, value))

    def __hash__(self) -> int:
        return hash(("Field", self.key))

    def is_in(self, values: Sequence[Scalar]) -> In:
        return In(self.key, _check_values(self.key, values))

    def range(
        self,
        *,
        gt: float | None = None,
        gte: float | None = None,
        lt: float | None = None,
        lte: float | None = None,
    ) -> Range:
        return _make_range(self.key, {"gt": gt, "gte": gte, "lt": lt, "lte": lte})

    def __gt__(self, value: float) -> Range:
        return self.range(gt=value)

    def __ge__(self, value: float) -> Range:
        return self.range(gte=value)

    def __lt__(self, value: float) -> Range:
        return self.range(lt=value)

    def __le__(self, value: float) -> Range:
        return self.range(lte=value)


# -- parsing -----------------------------------------------------------------------------------


def parse_filter(spec: Filter | Mapping[str, Any] | None) -> Filter | None:
    """Normalise a user filter to a ``Filter`` tree; ``None`` or ``{}`` means "no filter"."""
    if spec is None:
        return spec
    check_filter_depth(spec)
    if isinstance(spec, Filter):
        return spec
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"filter must be a dict or a Filter, got {type(spec).__name__}")
    nodes: list[Filter] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            nodes.append(_parse_group(key, value))
        elif isinstance(key, str) and key.startswith("$"):
            raise InvalidInputError(f"unknown filter operator {key!r}; use '$and' or '$or'")
        else:
            nodes.extend(_parse_field(_check_key(key), value))
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else And(tuple(nodes))


MAX_FILTER_DEPTH = 64  # nesting levels of $and/$or (dict form) or &/| (Filter trees)


def check_filter_depth(spec: object) -> None:
    """Refuse filters nested deeper than ``MAX_FILTER_DEPTH`` (walked without recursion)."""
    # a dict-form group costs two levels (the dict and its list), a Filter node one
    stack: list[tuple[object, int]] = [(spec, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > 2 * MAX_FILTER_DEPTH:
            raise InvalidInputError(
                f"filter is nested more than {MAX_FILTER_DEPTH} levels deep; flatten its $and/$or groups"
            )
        if isinstance(node, And | Or):
            stack.extend((child, depth + 2) for child in node.children)
        elif isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, Mapping | list | tuple))
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node if isinstance(v, Mapping | list | tuple | And | Or))


def _parse_group(op: str, value: Any) -> Filter:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise InvalidInputError(f"{op!r} needs a non-empty list of filters, got {value!r}")
    children = []
    for item in value:
        child = parse_filter(item)
        if child is None:
            raise InvalidInputError(f"{op!r} contains an empty filter")
        children.append(child)
    return And(tuple(children)) if op == "$and" else Or(tuple(children))


def _parse_field(key: str, value: Any) -> list[Filter]:
    if not isinstance(value, Mapping):
        if isinstance(value, list | tuple | set):
            raise InvalidInputError(f"filter on {key!r}: use {{'in': [...]}} to match any of several values")
        return [Eq(key, _check_scalar(key, value))]
    unknown = [op for op in value if op not in _FIELD_OPS]
    if unknown or not value:
        raise InvalidInputError(
            f"filter on {key!r}: unknown operator(s) {unknown!r}; allowed: {', '.join(_FIELD_OPS)}"
        )
    nodes: list[Filter] = []
    if "eq" in value:
        nodes.append(Eq(key, _check_scalar(key, value["eq"])))
    if "in" in value:
        nodes.append(In(key, _check_values(key, value["in"])))
    bounds = {op: value[op] for op in _RANGE_OPS if op in value}
    if bounds:
        nodes.append(_make_range(key, bounds))
    return nodes


def _as_node(other: object) -> Filter:
    if not isinstance(other, Filter):
        raise InvalidInputError(f"can only combine filters with filters, got {type(other).__name__}")
    return other


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or key.startswith("$"):
        raise InvalidInputError(
            f"filter field names must be non-empty strings not starting with '$': {key!r}"
        )
    from kalm_rag.texts import check_unicode

    return check_unicode(key, "filter field name")


def _check_scalar(key: str, value: object) -> Scalar:
    if isinstance(value, float):
        raise InvalidInputError(f"filter on {key!r}: floats cannot be matched exactly; use a range")
    if not isinstance(value, str | int):  # bool is an int subclass and is allowed
        raise InvalidInputError(
            f"filter on {key!r}: match values must be str, int or bool, got {type(value).__name__}"
        )
    if isinstance(value, str):
        from kalm_rag.texts import check_unicode

        check_unicode(value, f"filter value on {key!r}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise InvalidInputError(f"filter on {key!r}: integer {value} does not fit in 64 bits (signed)")
    return value


def _check_values(key: str, values: object) -> tuple[Scalar, ...]:
    if not isinstance(values, list | tuple | set | frozenset) or not values:
        raise InvalidInputError(f"filter on {key!r}: 'in' needs a non-empty list of values")
    return tuple(_check_scalar(key, v) for v in values)


def _make_range(key: str, bounds: Mapping[str, Any]) -> Range:
    clean: dict[str, float] = {}
    for op, bound in bounds.items():
        if bound is None:
            continue
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise InvalidInputError(f"filter on {key!r}: {op!r} bound must be a number, got {bound!r}")
        if bound != bound:  # NaN compares false with everything
            raise InvalidInputError(f"filter on {key!r}: {op!r} bound is NaN")
        try:
            clean[op] = float(bound)
        except OverflowError:
            raise InvalidInputError(f"filter on {key!r}: {op!r} bound {bound} is out of range") from None
    if not clean:
        raise InvalidInputError(f"filter on {key!r}: a range needs at least one of {', '.join(_RANGE_OPS)}")
    return Range(key, **clean)


# -- evaluation --------------------------------------------------------------------------------


def matches(node: Filter, payload: Mapping[str, Any] | None) -> bool:
    """Whether ``payload`` satisfies the filter tree ``node``."""
    if isinstance(node, And):
        return all(matches(child, payload) for child in node.children)
    if isinstance(node, Or):
        return any(matches(child, payload) for child in node.children)
    values = field_values(payload, node.key) if isinstance(node, Eq | In | Range) else []
    if isinstance(node, Eq):
        return any(_same(v, node.value) for v in values)
    if isinstance(node, In):
        return any(_same(v, target) for v in values for target in node.values)
    if isinstance(node, Range):
        return any(_in_range(v, node) for v in values)
    raise InvalidInputError(f"unknown filter node {node!r}")


def field_values(payload: Mapping[str, Any] | None, key: str) -> list[Any]:
    """Values at a dotted path; a list contributes each of its elements (Qdrant's rule)."""
    current: list[Any] = [payload] if payload is not None else []
    for part in key.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, Mapping) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    return current


def _same(value: Any, target: Scalar) -> bool:
    # Type classes must agree: True == 1 in Python, but not in a payload filter.
    if isinstance(target, bool) or isinstance(value, bool):
        return isinstance(target, bool) and isinstance(value, bool) and value is target
    if isinstance(target, int):
        return isinstance(value, int) and value == target
    return isinstance(value, str) and value == target


def _in_range(value: Any, node: Range) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (
        (node.gt is None or value > node.gt)
        and (node.gte is None or value >= node.gte)
        and (node.lt is None or value < node.lt)
        and (node.lte is None or value <= node.lte)
    )
