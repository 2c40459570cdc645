"""Reading a saved HnswIndex folder back, with a clear error for every damaged file.

The folder holds hnswlib's own graph (``hnsw.bin``), the string-id <-> label map
(``labels.json``), a dense copy of the vectors (``vectors.npy``, absent in older saves) and the
records (ids and payloads, see storage.py). Each reader checks its file against the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kalm_rag.errors import InvalidInputError
from kalm_rag.index.storage import hnswlib_file_dim, load_vectors, read_json


def read_labels(folder: Path, count: int) -> tuple[list[int], int]:
    """The hnswlib label of each saved item (in record order) and the next free label."""
    label_info = read_json(folder / "labels.json")
    labels = label_info.get("labels") if isinstance(label_info, dict) else None
    if (
        not isinstance(labels, list)
        or len(labels) != count
        or not all(type(label) is int for label in labels)
        or type(label_info.get("next_label")) is not int
    ):
        raise InvalidInputError(f"index data in {folder} is damaged: labels.json does not match")
    return labels, int(label_info["next_label"])


def load_graph(engine: Any, folder: Path, path: object, dim: int, count: int) -> None:
    """Load ``hnsw.bin`` into a fresh hnswlib ``engine`` after checking its dimension and size."""
    graph = folder / "hnsw.bin"
    if hnswlib_file_dim(graph) != dim:
        raise InvalidInputError(
            f"index at {path} is damaged: {graph.name} holds {hnswlib_file_dim(graph)}-d vectors, "
            f"index.json says dim {dim}"
        )
    try:
        engine.load_index(str(graph), max_elements=0, allow_replace_deleted=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise InvalidInputError(f"index at {path} is damaged: {graph.name} ({exc})") from exc
    if engine.get_current_count() < count:
        raise InvalidInputError(f"index at {path} is damaged: {graph.name} holds fewer than {count} items")


def read_dense_vectors(folder: Path, engine: Any, labels: list[int], dim: int) -> npt.NDArray[np.float32]:
    """The saved dense copy; saves from before it existed are read back from hnswlib."""
    count = len(labels)
    vectors: npt.NDArray[np.float32]
    if (folder / "vectors.npy").is_file():
        vectors = load_vectors(folder, count, dim)
    else:
        vectors = np.asarray(engine.get_items(labels), np.float32).reshape(count, dim)
    if vectors.shape != (count, dim) or vectors.dtype != np.float32:
        raise InvalidInputError(f"index data in {folder} is damaged: vectors have shape {vectors.shape}")
    return vectors


__all__ = ["load_graph", "read_dense_vectors", "read_labels"]
