"""The contract every vector index honours, and the small value types it returns.

Semantics shared by every backend (the contract tests in tests/sdk/test_index_contract.py pin them):

- Ids are non-empty strings. Any int label or uuid an engine needs is internal and persisted.
- ``add`` is an upsert: an existing id gets the new vector and the new payload (a payload of
  ``None`` clears the old one). One call must not repeat an id (``InvalidInputError``), because
  "which of the two wins" has no good answer. ``add`` validates everything before it changes
  anything, so a rejected call leaves the index as it was.
- Scores are similarities, higher is better: cosine and dot give the inner product (cosine
  normalises vectors on add and on query), ``l2`` gives the *negative* Euclidean distance.
- ``search`` returns one list per query, best first, at most ``k`` hits; fewer when fewer live
  items (after the filter) exist. An empty index gives empty lists.
- ``get`` returns one entry per requested id, ``None`` for an unknown id. Vectors come back as
  stored (unit length under cosine).
- ``delete`` ignores unknown ids (deleting is idempotent) and returns how many ids it removed.
- A payload is a JSON object with string keys; an empty payload is stored as "no payload" and
  comes back as ``None``. Keys starting with ``__kalm`` are reserved.
- ``save`` is atomic: a crash during ``save`` leaves the previously saved index loadable.
- Searches may run from many threads while another thread adds or deletes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from kalm_rag.index.filters import Filter

Metric = Literal["cosine", "dot", "l2"]
METRICS: tuple[str, ...] = ("cosine", "dot", "l2")

Payload = dict[str, Any]
PathType = str | PathLike[str]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: the item's id, its similarity to the query, and its payload."""

    id: str
    score: float
    payload: Payload | None = None


# Engines create a hit per result (10 per query, thousands per second). A frozen dataclass's
# __init__ routes every field through object.__setattr__'s frozen check; writing the slots
# directly builds the same immutable object 2.4x faster (measured), so engines use make_hit.
_new_object = object.__new__
_slots: dict[str, Any] = dict(vars(SearchHit))
_set_id = _slots["id"].__set__
_set_score = _slots["score"].__set__
_set_payload = _slots["payload"].__set__


def make_hit(item_id: str, score: float, payload: Payload | None) -> SearchHit:
    """``SearchHit(item_id, score, payload)`` for engines' hot loops (no argument checks)."""
    hit: SearchHit = _new_object(SearchHit)
    _set_id(hit, item_id)
    _set_score(hit, score)
    _set_payload(hit, payload)
    return hit


@dataclass(frozen=True, eq=False)
class StoredItem:
    """What ``get`` returns for a known id: the stored vector (float32) and payload."""

    id: str
    vector: npt.NDArray[np.float32]
    payload: Payload | None = None


@runtime_checkable
class VectorIndex(Protocol):
    """A mutable, persistable nearest-neighbour index over string ids."""

    @property
    def dim(self) -> int:
        """Vector dimension the index accepts."""
        ...

    @property
    def metric(self) -> str:
        """``"cosine"``, ``"dot"`` or ``"l2"``."""
        ...

    def add(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        *,
        payloads: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Insert or replace ``ids`` with ``vectors`` (n x dim) and optional payloads."""
        ...

    def search(
        self,
        queries: npt.ArrayLike,
        *,
        k: int = 10,
        filter: Filter | Mapping[str, Any] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query row (a 1-D vector counts as one query)."""
        ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ``ids``; unknown ids are ignored. Returns the number removed."""
        ...

    def get(self, ids: Sequence[str]) -> list[StoredItem | None]:
        """Stored vector and payload per id, ``None`` for unknown ids."""
        ...

    def __len__(self) -> int:
        """Number of live items."""
        ...

    def save(self, path: PathType) -> None:
        """Write the whole index to the folder ``path`` atomically."""
        ...

    def close(self) -> None:
        """Release engine resources (files, connections). Safe to call twice."""
        ...


class IndexContext:
    """``with SomeIndex(...) as index:`` closes the index on exit (mixin for the backends)."""

    def close(self) -> None:
        """Release engine resources; the default has none."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
