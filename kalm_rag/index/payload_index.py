"""An inverted index over payloads: which items a filter allows, without a scan.

Used by the in-memory backends (hnswlib) to evaluate a filter as set operations on numpy
arrays and to know exactly how many items it allows before choosing how to search (see
``kalm_rag.index.filter_plan``). Semantics are those of ``filters.matches`` (the contract tests
compare both on the same data):

- a dotted key ``a.b`` reaches into nested objects; a list contributes each of its elements;
- equality matches strings, integers and booleans, each only its own kind (``True`` is not
  ``1``); floats never match equality;
- ranges compare numbers (integers and floats, never booleans).

Items are integer labels. ``allowed(node, size)`` returns a boolean mask over ``0..size-1``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.index.filters import And, Eq, Filter, In, Or, Range, Scalar

Path_ = tuple[str, ...]
Term = tuple[str, Scalar]  # ("s" | "i" | "b", value): kinds never equal one another

_EMPTY = np.empty(0, np.int64)
_CACHED_MASKS = 16


def _term(value: Any) -> Term | None:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, str):
        return ("s", value)
    return None


def _leaves(payload: Mapping[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """(path, scalar) for every leaf a filter can reach; lists contribute each element."""
    for key, value in payload.items():
        path = (*prefix, key)
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, Mapping):
                yield from _leaves(item, path)
            elif not isinstance(item, list):  # a list in a list is not reachable by a filter
                yield path, item


class PayloadIndex:
    """Postings (path -> term -> labels) and numeric columns (path -> values, labels)."""

    def __init__(self) -> None:
        self._terms: dict[Path_, dict[Term, set[int]]] = {}
        self._numbers: dict[Path_, dict[int, list[float]]] = {}
        self._term_arrays: dict[tuple[Path_, Term], npt.NDArray[np.int64]] = {}
        self._sorted: dict[Path_, tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]] = {}
        # the last few filters' masks (read-only), until the next write: a tenant's filter repeats
        self._masks: dict[tuple[str, int], npt.NDArray[np.bool_]] = {}
        self._masks_lock = threading.Lock()  # searches share the cache from many threads

    def add(self, label: int, payload: Mapping[str, Any] | None) -> None:
        if not payload:
            return
        self._masks.clear()
        for path, value in _leaves(payload):
            term = _term(value)
            if term is not None:
                self._terms.setdefault(path, {}).setdefault(term, set()).add(label)
                self._term_arrays.pop((path, term), None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._numbers.setdefault(path, {}).setdefault(label, []).append(float(value))
                self._sorted.pop(path, None)

    def remove(self, label: int, payload: Mapping[str, Any] | None) -> None:
        if not payload:
            return
        self._masks.clear()
        for path, value in _leaves(payload):
            term = _term(value)
            postings = self._terms.get(path)
            if term is not None and postings is not None and term in postings:
                postings[term].discard(label)
                if not postings[term]:
                    del postings[term]
                self._term_arrays.pop((path, term), None)
            numbers = self._numbers.get(path)
            if numbers is not None and label in numbers:
                del numbers[label]
                self._sorted.pop(path, None)

    # -- evaluation ----------------------------------------------------------------------------
    def allowed(self, node: Filter, size: int) -> npt.NDArray[np.bool_]:
        """Boolean mask over labels ``0..size-1`` (every label is below ``size``): True where
        the payload matches ``node``. The array is shared: read it, never write it."""
        key = (repr(node), size)  # repr, not the node: Eq("k", 1) == Eq("k", True) in Python
        with self._masks_lock:
            mask = self._masks.get(key)
        if mask is None:
            mask = self._evaluate(node, size)
            mask.flags.writeable = False
            with self._masks_lock:
                if len(self._masks) >= _CACHED_MASKS:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[key] = mask
        return mask

    def _evaluate(self, node: Filter, size: int) -> npt.NDArray[np.bool_]:
        if isinstance(node, And):
            mask = self._evaluate(node.children[0], size)
            for child in node.children[1:]:
                if not mask.any():
                    break
                mask &= self._evaluate(child, size)
            return mask
        if isinstance(node, Or):
            mask = np.zeros(size, bool)
            for child in node.children:
                mask |= self._evaluate(child, size)
            return mask
        mask = np.zeros(size, bool)
        for labels in self._labels(node):
            mask[labels] = True
        return mask

    def _labels(self, node: Filter) -> Iterator[npt.NDArray[np.int64]]:
        if isinstance(node, Eq | In):
            path = tuple(node.key.split("."))
            values = (node.value,) if isinstance(node, Eq) else node.values
            for value in values:
                term = _term(value)
                if term is not None:
                    yield self._term_array(path, term)
        elif isinstance(node, Range):
            yield self._range(tuple(node.key.split(".")), node)
        else:  # pragma: no cover - parse_filter builds only these node types
            raise TypeError(f"unknown filter node {node!r}")

    def _term_array(self, path: Path_, term: Term) -> npt.NDArray[np.int64]:
        cached = self._term_arrays.get((path, term))
        if cached is None:
            labels = self._terms.get(path, {}).get(term)
            cached = np.fromiter(labels, np.int64, len(labels)) if labels else _EMPTY
            self._term_arrays[(path, term)] = cached
        return cached

    def _range(self, path: Path_, node: Range) -> npt.NDArray[np.int64]:
        column = self._sorted.get(path)
        if column is None:
            numbers = self._numbers.get(path, {})
            count = sum(len(v) for v in numbers.values())
            values = np.fromiter((x for v in numbers.values() for x in v), np.float64, count)
            labels = np.fromiter((lb for lb, v in numbers.items() for _ in v), np.int64, count)
            order = np.argsort(values, kind="stable")
            column = (values[order], labels[order])
            self._sorted[path] = column
        values, labels = column
        lo, hi = 0, len(values)
        if node.gte is not None:
            lo = max(lo, int(np.searchsorted(values, node.gte, "left")))
        if node.gt is not None:
            lo = max(lo, int(np.searchsorted(values, node.gt, "right")))
        if node.lte is not None:
            hi = min(hi, int(np.searchsorted(values, node.lte, "right")))
        if node.lt is not None:
            hi = min(hi, int(np.searchsorted(values, node.lt, "left")))
        return labels[lo:hi] if lo < hi else _EMPTY


class CachedPayloadMasks:
    """A PayloadIndex over a row-ordered payload list, rebuilt when ``version`` changes.

    For backends whose rows move on writes (BruteForceIndex, BM25Index): the first filtered
    search after a write rebuilds the index once (what one unindexed filtered search used to
    cost), and later ones evaluate the filter with numpy.
    """

    def __init__(self) -> None:
        self._version: object = None
        self._index: PayloadIndex | None = None
        self._lock = threading.Lock()

    def allowed(
        self, version: object, payloads: Sequence[Mapping[str, Any] | None], node: Filter, size: int
    ) -> npt.NDArray[np.bool_]:
        with self._lock:  # searches run concurrently: one of them rebuilds
            if self._index is None or self._version is not version:
                index = PayloadIndex()
                for row, payload in enumerate(payloads):
                    index.add(row, payload)
                self._index, self._version = index, version
            index = self._index
        return index.allowed(node, size)
