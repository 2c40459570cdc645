"""Which payload fields the Qdrant paths index by themselves, and when a filter is answered exactly.

Qdrant's guidance (documentation: Indexing > Payload index; "Filtering in vector search"):
index every payload field you filter on, and do it before the data goes in. A payload index
lets the query planner estimate how many points a filter allows (small sets are then scored
exactly from the index) and makes the HNSW build add filter-aware links for the indexed
values. Without one, a filtered search walks a graph whose links the filter cuts: measured on
60k real embeddings, a filter keeping 10% returned recall@10 0.23. Qdrant leaves the choice of
fields to the user because indexes cost memory; kalm-rag payloads are metadata (source,
language, tenant, dates), so kalm-rag makes the choice by default:

- every scalar payload field gets an index of the kind its values have, created before the
  first point carrying it is written: ``keyword`` (strings up to ``MAX_KEYWORD_CHARS``),
  ``integer``, ``float`` (floats, or integers mixed with floats), ``bool``. Lists of scalars
  count element-wise; nested objects by dotted path. Keys starting with ``_kalm`` (the text the
  integrations store) are never indexed.
- a field whose values an index of one kind cannot hold (long texts, strings mixed with
  numbers, objects inside lists) is left without an index, and an existing index on it is
  dropped: Qdrant would otherwise miss the values of the other kind even in exact search.
- a filter that touches a field without a fitting index is answered by exact search
  (``SearchParams(exact=True)``), which is correct whatever the graph looks like.

Auto-indexing needs to know every value the collection holds, so it runs only on collections
this class saw from empty (its state travels in the embedded shard's folder); on a collection
opened non-empty without that state, only existing and declared indexes are used, and other
filters are exact. ``QdrantConfig(auto_payload_indexes=False)`` turns auto-indexing off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from kalm_rag.index.filters import And, Eq, Filter, In, Or, Range

MAX_KEYWORD_CHARS = 256
KINDS = ("keyword", "integer", "float", "bool")
STATE_FILE = "kalm_payload_schema.json"
_UNINDEXABLE = "-"
log = logging.getLogger(__name__)


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "keyword" if len(value) <= MAX_KEYWORD_CHARS else _UNINDEXABLE
    return None  # null: matches no filter, needs no index


def _merge(kinds: Iterable[str]) -> str:
    found = set(kinds)
    if len(found) == 1:
        return found.pop()
    if found == {"integer", "float"}:
        return "float"  # a float index holds integers too (ranges); equality is checked on payloads
    return _UNINDEXABLE


def field_kinds(
    payload: Mapping[str, Any], prefix: str = "", in_list: bool = False
) -> Iterator[tuple[str, str]]:
    """(dotted path, kind) for every scalar a filter can reach in ``payload``."""
    for key, value in payload.items():
        if not prefix and key.startswith("_kalm"):
            continue
        path = f"{prefix}{key}"
        if "." in key:
            continue  # filters read "a.b" as nested objects: this key is unreachable
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, Mapping):
                if isinstance(value, list) or in_list:  # objects in lists: no plain index path
                    yield path, _UNINDEXABLE
                else:
                    yield from field_kinds(item, f"{path}.", in_list)
            elif isinstance(item, list):
                yield path, _UNINDEXABLE
            else:
                kind = _kind(item)
                if kind is not None:
                    yield path, kind


class PayloadSchema:
    """The payload indexes of one collection, and the fields that must stay unindexed."""

    def __init__(
        self,
        existing: Mapping[str, str],
        declared: Mapping[str, str],
        *,
        auto: bool,
        blocked: Iterable[str] = (),
        state_file: Path | None = None,
    ) -> None:
        self.kinds: dict[str, str] = dict(existing)
        self.declared = dict(declared)
        self.auto = auto
        self.blocked: set[str] = set(blocked)
        self._state_file = state_file

    @classmethod
    def open(
        cls,
        existing: Mapping[str, str],
        declared: Mapping[str, str],
        *,
        auto: bool,
        empty: bool,
        folder: Path | None,
    ) -> PayloadSchema:
        """The schema of a collection; ``folder`` keeps the state (embedded engine only)."""
        state_file = folder / STATE_FILE if folder is not None else None
        state: dict[str, Any] | None = None
        if state_file is not None and state_file.is_file():
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = None
        knows_all = empty or isinstance(state, dict)
        blocked = state.get("blocked", []) if isinstance(state, dict) else []
        schema = cls(existing, declared, auto=auto and knows_all, blocked=blocked, state_file=state_file)
        if auto and not knows_all:
            log.info("Qdrant collection opened non-empty without kalm-rag's payload schema: no auto-indexing")
        schema._save()
        return schema

    def initial_changes(self) -> tuple[dict[str, str], list[str]]:
        """Declared indexes still missing (created when the collection opens)."""
        create = {f: k for f, k in self.declared.items() if f not in self.kinds and f not in self.blocked}
        self.kinds.update(create)
        return create, []

    def plan_upsert(self, payloads: Iterable[Mapping[str, Any] | None]) -> tuple[dict[str, str], list[str]]:
        """Indexes to create and to drop before ``payloads`` are written."""
        seen: dict[str, set[str]] = {}
        for payload in payloads:
            for path, kind in field_kinds(payload or {}):
                seen.setdefault(path, set()).add(kind)
        create: dict[str, str] = {}
        drop: list[str] = []
        for path, kinds in seen.items():
            if path in self.blocked:
                continue
            current = self.kinds.get(path)
            if current is None and not (self.auto or path in self.declared):
                continue
            if current is not None and current not in KINDS:
                continue  # an index kalm-rag does not make (text, geo, ...): left as it is
            merged = _merge(kinds | ({current} if current else set()))
            if merged == current:
                continue
            if current is not None:
                drop.append(path)
                del self.kinds[path]
            if merged == _UNINDEXABLE:
                self.blocked.add(path)
                log.warning(
                    "payload field %r holds values one Qdrant index cannot hold: filters on it are exact",
                    path,
                )
            else:
                create[path] = merged
                self.kinds[path] = merged
        if create or drop:
            self._save()
        return create, drop

    def covers(self, node: Filter) -> bool:
        """Whether every condition of ``node`` has a payload index that serves it."""
        if isinstance(node, And | Or):
            return all(self.covers(child) for child in node.children)
        kind = self.kinds.get(node.key) if isinstance(node, Eq | In | Range) else None
        if kind is None:
            return False
        if isinstance(node, Range):
            return kind in ("integer", "float")
        values = (node.value,) if isinstance(node, Eq) else node.values if isinstance(node, In) else ()
        return kind in ("keyword", "integer", "bool") and all(_kind(v) == kind for v in values)

    def _save(self) -> None:
        if self._state_file is None:
            return
        body = json.dumps({"blocked": sorted(self.blocked), "kinds": self.kinds})
        tmp = self._state_file.with_name(f".{STATE_FILE}.tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(self._state_file)
