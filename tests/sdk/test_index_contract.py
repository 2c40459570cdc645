"""The VectorIndex contract, run against every backend: exact (the oracle), hnswlib, embedded
Qdrant (qdrant-edge) and qdrant-client's local mode (the client path a server uses).

Documented choices pinned here: duplicate ids in one ``add`` raise; ``get`` returns ``None`` for
unknown ids; ``delete`` ignores unknown ids and returns how many it removed; empty payloads
come back as ``None``; l2 scores are negative Euclidean distances.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.index.base import VectorIndex
from kalm_rag.index.brute import BruteForceIndex
from kalm_rag.index.filters import Field
from kalm_rag.index.hnsw import HnswConfig, HnswIndex
from kalm_rag.index.persist import load_index
from kalm_rag.index.qdrant import QdrantIndex

BACKENDS = ["brute", "hnsw", "qdrant-edge", "qdrant-local"]
DIM = 16
Factory = Callable[..., Any]


def build(kind: str, dim: int, metric: str) -> Any:
    if kind == "brute":
        return BruteForceIndex(dim, metric=metric)
    if kind == "hnsw":  # a tiny capacity makes every test exercise resizing
        return HnswIndex(dim, metric=metric, config=HnswConfig(capacity=8))
    if kind == "qdrant-edge":
        return QdrantIndex(dim, metric=metric)
    return QdrantIndex(dim, metric=metric, location=":memory:")


@pytest.fixture(params=BACKENDS)
def make_index(request: pytest.FixtureRequest) -> Iterator[Factory]:
    made: list[Any] = []

    def factory(dim: int = DIM, metric: str = "cosine") -> Any:
        index = build(request.param, dim, metric)
        made.append(index)
        return index

    yield factory
    for index in made:
        index.close()


@pytest.fixture
def loaded() -> Iterator[Callable[[Path], Any]]:
    opened: list[Any] = []

    def load(path: Path) -> Any:
        index = load_index(path)
        opened.append(index)
        return index

    yield load
    for index in opened:
        index.close()


def vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def ids_of(n: int, prefix: str = "doc") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def expected_scores(queries: np.ndarray, items: np.ndarray, metric: str) -> np.ndarray:
    q, x = queries.astype(np.float64), items.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    scores: np.ndarray = -np.linalg.norm(q[:, None, :] - x[None, :, :], axis=2) if metric == "l2" else q @ x.T
    return scores


def test_every_backend_satisfies_the_protocol(make_index: Factory) -> None:
    index = make_index()
    assert isinstance(index, VectorIndex)
    assert (index.dim, index.metric, len(index)) == (DIM, "cosine", 0)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_search_returns_exact_neighbours_with_similarity_scores(make_index: Factory, metric: str) -> None:
    index = make_index(metric=metric)
    items, queries = vectors(150), vectors(5, seed=1)
    index.add(ids_of(150), items)
    hits = index.search(queries, k=7)
    truth = expected_scores(queries, items, metric)
    for row, row_hits in enumerate(hits):
        best = np.argsort(-truth[row])[:7]
        assert [h.id for h in row_hits] == [f"doc-{i}" for i in best]
        np.testing.assert_allclose([h.score for h in row_hits], truth[row, best], rtol=1e-4, atol=1e-4)
        assert all(h.payload is None for h in row_hits)


def test_upsert_replaces_vector_and_payload(make_index: Factory) -> None:
    index = make_index()
    items = vectors(20)
    index.add(ids_of(20), items, payloads=[{"v": 1}] * 20)
    index.add(["doc-3"], -items[0:1], payloads=[{"v": 2, "tag": "new"}])
    assert len(index) == 20
    item = index.get(["doc-3"])[0]
    np.testing.assert_allclose(item.vector, -items[0] / np.linalg.norm(items[0]), rtol=1e-5, atol=1e-6)
    assert item.payload == {"v": 2, "tag": "new"}
    top = index.search(-items[0], k=1)[0][0]
    assert top.id == "doc-3" and top.score == pytest.approx(1.0, abs=1e-5)
    index.add(["doc-3"], items[3:4])  # no payload given: the old one is cleared
    assert index.get(["doc-3"])[0].payload is None


def test_delete_removes_items_and_ignores_unknown_ids(make_index: Factory) -> None:
    index = make_index()
    items = vectors(30)
    index.add(ids_of(30), items)
    assert index.delete(["doc-0", "doc-1", "missing", "doc-0"]) == 2
    assert index.delete(["doc-0"]) == 0  # idempotent
    assert len(index) == 28
    assert index.get(["doc-0", "doc-2"])[0] is None
    found = {h.id for h in index.search(items[:2], k=30)[0]}
    assert found == set(ids_of(30)) - {"doc-0", "doc-1"}
    index.add(["doc-0"], items[:1])  # a deleted id can come back
    assert index.search(items[0], k=1)[0][0].id == "doc-0"
    assert len(index) == 29


def test_get_keeps_order_and_returns_none_for_unknown_ids(make_index: Factory) -> None:
    index = make_index(metric="dot")
    items = vectors(5)
    index.add(ids_of(5), items, payloads=[{"i": i} for i in range(5)])
    got = index.get(["doc-4", "nope", "doc-1", "doc-4"])
    assert [g.id if g else None for g in got] == ["doc-4", None, "doc-1", "doc-4"]
    np.testing.assert_allclose(got[0].vector, items[4], rtol=1e-6)
    assert got[2].payload == {"i": 1} and got[0].vector.dtype == np.float32


# A fixed payload set with hand-written expectations, independent of any evaluator.
PAYLOADS: list[dict[str, Any] | None] = [
    {"lang": "en", "year": 1999, "tags": ["cli", "net"], "free": True, "meta": {"src": "deb"}},
    {"lang": "en", "year": 2005, "tags": ["gui"], "free": False, "meta": {"src": "man"}},
    {"lang": "de", "year": 2010, "tags": ["cli"], "free": True},
    {"lang": "fr", "year": 2020.5, "tags": [], "free": 1},
    {"lang": "de", "year": "2015"},
    None,
    {"lang": ["en", "de"], "year": 2001},
]
FILTER_CASES: list[tuple[Any, set[int]]] = [
    ({"lang": "en"}, {0, 1, 6}),
    ({"lang": {"in": ["de", "fr"]}}, {2, 3, 4, 6}),
    ({"year": {"gte": 2005}}, {1, 2, 3}),
    ({"year": {"gt": 1999, "lt": 2010}}, {1, 6}),
    ({"tags": "cli"}, {0, 2}),
    ({"free": True}, {0, 2}),
    ({"free": 1}, {3}),
    ({"meta.src": "man"}, {1}),
    ({"lang": "en", "year": {"lte": 2001}}, {0, 6}),
    ({"$or": [{"lang": "fr"}, {"tags": "gui"}]}, {1, 3}),
    ({"$and": [{"lang": "de"}, {"$or": [{"year": {"gte": 2010}}, {"tags": "net"}]}]}, {2}),
    ({"tags": {"in": ["net", "gui"]}, "free": False}, {1}),
    ((Field("lang") == "de") | (Field("year") < 2000), {0, 2, 4, 6}),
    (Field("year").range(gte=2001, lte=2010) & Field("lang").is_in(["en"]), {1, 6}),
    ({"lang": "xx"}, set()),
    ({}, set(range(7))),
]


@pytest.mark.parametrize(("spec", "expected"), FILTER_CASES, ids=[str(c[0]) for c in FILTER_CASES])
def test_filters_select_exactly_the_matching_payloads(
    make_index: Factory, spec: Any, expected: set[int]
) -> None:
    index = make_index()
    index.add(ids_of(7), vectors(7), payloads=PAYLOADS)
    hits = index.search(vectors(2, seed=5), k=50, filter=spec)
    for row in hits:
        assert {h.id for h in row} == {f"doc-{i}" for i in expected}
        for h in row:
            assert h.payload == PAYLOADS[int(h.id.split("-")[1])]


def test_k_larger_than_the_index_returns_every_live_item(make_index: Factory) -> None:
    index = make_index()
    index.add(ids_of(5), vectors(5), payloads=[{"even": i % 2 == 0} for i in range(5)])
    index.delete(["doc-4"])
    assert len(index.search(vectors(1, seed=3), k=100)[0]) == 4
    assert {h.id for h in index.search(vectors(1, seed=3), k=100, filter={"even": True})[0]} == {
        "doc-0",
        "doc-2",
    }


def test_empty_index_and_empty_calls(
    make_index: Factory, tmp_path: Path, loaded: Callable[[Path], Any]
) -> None:
    index = make_index()
    assert index.search(vectors(3), k=5) == [[], [], []]
    assert index.search(np.empty((0, DIM), np.float32)) == []
    index.add([], np.empty((0, DIM), np.float32))
    assert index.delete([]) == 0 and index.get([]) == [] and len(index) == 0
    index.save(tmp_path / "empty")
    assert len(loaded(tmp_path / "empty")) == 0


def test_save_load_round_trip(make_index: Factory, tmp_path: Path, loaded: Callable[[Path], Any]) -> None:
    index = make_index(metric="l2")
    items = vectors(60)
    index.add(ids_of(60), items, payloads=[{"n": i, "name": f"文档 {i}"} for i in range(60)])
    index.delete(["doc-7"])
    queries = vectors(4, seed=9)
    before = index.search(queries, k=5, filter={"n": {"gte": 10}})
    index.save(tmp_path / "idx")
    index.add(["late"], items[:1])  # changes after the save must not leak into it
    copy = loaded(tmp_path / "idx")
    assert type(copy) is type(index) and (copy.dim, copy.metric, len(copy)) == (DIM, "l2", 59)
    after = copy.search(queries, k=5, filter={"n": {"gte": 10}})
    assert [[h.id for h in r] for r in after] == [[h.id for h in r] for r in before]
    np.testing.assert_allclose(
        [h.score for r in after for h in r], [h.score for r in before for h in r], rtol=1e-5
    )
    assert copy.get(["doc-3"])[0].payload == {"n": 3, "name": "文档 3"} and copy.get(["doc-7", "late"]) == [
        None,
        None,
    ]
    copy.add(["new"], items[:1])  # a loaded index is fully usable
    assert copy.search(items[0], k=1)[0][0].id in {"new", "doc-0"} and len(copy) == 60
    index.save(tmp_path / "idx")  # saving again replaces the previous save
    assert len(loaded(tmp_path / "idx")) == 60


def test_dimension_mismatch_is_a_clear_error(make_index: Factory) -> None:
    index = make_index()
    with pytest.raises(InvalidInputError, match="dimension mismatch: the index has dim 16, got 8"):
        index.add(["a"], vectors(1, dim=8))
    index.add(["a"], vectors(1))
    with pytest.raises(InvalidInputError, match="queries dimension mismatch"):
        index.search(vectors(1, dim=17))
    with pytest.raises(InvalidInputError, match="2-D"):
        index.add(["b"], np.zeros((1, 2, DIM)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_non_finite_vectors_are_rejected_and_nothing_is_added(make_index: Factory, bad: float) -> None:
    index = make_index()
    data = vectors(3).astype(np.float64)  # 1e39 is finite in float64, inf in float32
    data[1, 4] = bad
    with pytest.raises(InvalidInputError, match=r"NaN or inf .* rows \[1\]"):
        index.add(["a", "b", "c"], data)
    assert len(index) == 0
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        index.search(data[1])
    with np.errstate(over="ignore"), pytest.raises(InvalidInputError, match="NaN or inf"):
        index.search(data[1].astype(np.float32))  # the single float32 query fast path


def test_huge_but_finite_queries_are_accepted(make_index: Factory) -> None:
    index = make_index()
    index.add(ids_of(3), vectors(3))
    query = np.full(DIM, 1e30, np.float32)  # its squared norm overflows float32, the values do not
    assert len(index.search(query, k=2)[0]) == 2


def test_duplicate_ids_in_one_call_are_rejected(make_index: Factory) -> None:
    index = make_index()
    with pytest.raises(InvalidInputError, match=r"duplicate ids in one call: \['x'\]"):
        index.add(["x", "y", "x"], vectors(3))
    assert len(index) == 0


@pytest.mark.parametrize(
    ("ids", "message"),
    [("abc", "not a single string"), (["a", ""], "non-empty strings"), (["a", 3], "non-empty strings")],
)
def test_bad_ids_are_rejected(make_index: Factory, ids: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make_index().add(ids, vectors(len(ids)))


def test_other_bad_input_is_rejected(make_index: Factory) -> None:
    index = make_index()
    with pytest.raises(InvalidInputError, match="got 2 ids but 3 vectors"):
        index.add(["a", "b"], vectors(3))
    with pytest.raises(InvalidInputError, match="got 1 ids but 2 payloads"):
        index.add(["a"], vectors(1), payloads=[{}, {}])
    with pytest.raises(InvalidInputError, match="reserved key"):
        index.add(["a"], vectors(1), payloads=[{"__kalm_id__": "b"}])
    with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
        index.add(["a"], vectors(1), payloads=[{"x": object()}])
    with pytest.raises(InvalidInputError, match="zero vectors"):
        index.add(["a"], np.zeros((1, DIM)))
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        index.search(vectors(1), k=0)
    with pytest.raises(InvalidInputError, match="unknown operator"):
        index.search(vectors(1), filter={"year": {"between": [1, 2]}})
    assert len(index) == 0


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="metric must be one of"):
        BruteForceIndex(4, metric="manhattan")
    with pytest.raises(ConfigError, match="dim must be a positive integer"):
        HnswIndex(0)
    with pytest.raises(ConfigError, match="pick one Qdrant target"):
        QdrantIndex(4, location=":memory:", url="http://localhost:6333")


def test_payloads_are_copies(make_index: Factory) -> None:
    index = make_index()
    payload = {"tags": ["a"]}
    index.add(["a"], vectors(1), payloads=[payload])
    payload["tags"].append("changed")  # the caller's dict is not the stored one
    hit = index.search(vectors(1), k=1)[0][0]
    assert hit.payload == {"tags": ["a"]}
    hit.payload["tags"].append("mutated")  # nor is the returned one
    assert index.get(["a"])[0].payload == {"tags": ["a"]}
