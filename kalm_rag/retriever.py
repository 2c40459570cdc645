"""Retriever: an Encoder plus a vector index (plus BM25 for hybrid search), saved together."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kalm_rag.chunking import ChunkerConfig, chunk_text
from kalm_rag.errors import ConfigError, InvalidInputError
from kalm_rag.retriever_files import (
    FORMAT_VERSION,
    MANIFEST,
    check_bm25_matches,
    read_retriever_manifest,
    resolved,
    saved_revision,
)
from kalm_rag.texts import check_unicode, validate_texts

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder
    from kalm_rag.index.base import SearchHit, VectorIndex
    from kalm_rag.index.bm25 import BM25Index

TEXT_KEY = "_kalm_text"  # payload key holding the chunk text; metadata keys may not start with "_kalm"


@dataclass(frozen=True)
class RetrieverConfig:
    """Query instruction/task, chunking, and hybrid (dense + BM25 via RRF) settings."""

    instruction: str | None = None
    task: str | None = None
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    hybrid_bm25: bool = True  # keep a BM25 index beside the vectors so hybrid=True works
    rrf_k: int = 60
    candidates: int = 50  # per-engine candidates fused in hybrid search
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("chunk_tokens", "chunk_overlap", "rrf_k", "candidates", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"RetrieverConfig.{name} must be an integer, got {value!r}")
        for name in ("instruction", "task"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"RetrieverConfig.{name} must be None or a non-empty string, got {value!r}")
        if not isinstance(self.hybrid_bm25, bool):
            raise ConfigError(f"RetrieverConfig.hybrid_bm25 must be True or False, got {self.hybrid_bm25!r}")
        if self.task is not None:
            from kalm_rag.instructions import parse_task

            parse_task(self.task)
        ChunkerConfig(self.chunk_tokens, self.chunk_overlap)  # validates
        if self.candidates < 1 or self.batch_size < 1 or self.rrf_k < 0:
            raise ConfigError("candidates and batch_size must be >= 1 and rrf_k >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrieverConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown retriever config keys {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Document:
    text: str
    id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrievedChunk:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]


class Retriever:
    """Embed texts with ``encoder``, store them in ``index``, search by text.

    ``index=None`` uses an exact ``BruteForceIndex`` (best below ~20-50k chunks); pass an
    ``HnswIndex`` or ``QdrantIndex`` to scale. Texts are stored in the index payloads, so a
    saved retriever folder is self-contained apart from the model, which it names.
    """

    def __init__(
        self,
        encoder: Encoder,
        index: VectorIndex | None = None,
        *,
        config: RetrieverConfig | None = None,
        bm25: BM25Index | None = None,
    ) -> None:
        self.encoder = encoder
        self.config = config or RetrieverConfig()
        if index is None:
            from kalm_rag.index.brute import BruteForceIndex

            index = BruteForceIndex(encoder.dim, metric="cosine" if encoder.config.normalize else "dot")
        if index.dim != encoder.dim:
            raise ConfigError(f"index dim {index.dim} does not match the encoder's dim {encoder.dim}")
        self.index = index
        self.bm25: BM25Index | None = bm25
        # (folder, revision) this retriever was loaded from / last saved to: a save over a folder
        # that another writer changed since then is refused instead of dropping their changes
        self._origin: tuple[Path, str | None] | None = None
        if bm25 is None and self.config.hybrid_bm25:
            from kalm_rag.index.bm25 import BM25Index

            self.bm25 = BM25Index()

    def __len__(self) -> int:
        return len(self.index)

    # -- writing ------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        show_progress: bool = False,
    ) -> list[str]:
        """Embed and upsert ``texts`` as they are (no chunking); returns their ids."""
        items = validate_texts(texts)
        id_list = [uuid.uuid4().hex for _ in items] if ids is None else list(ids)
        if len(id_list) != len(items):
            raise InvalidInputError(f"got {len(items)} texts but {len(id_list)} ids")
        if isinstance(metadatas, Mapping | str):
            raise InvalidInputError("metadatas must be a list with one dict (or None) per text")
        metas = [_metadata(m, f"metadatas[{n}]") for n, m in enumerate(metadatas or [])]
        if metadatas is None:
            metas = [{} for _ in items]
        if len(metas) != len(items):
            raise InvalidInputError(f"got {len(items)} texts but {len(metas)} metadatas")
        for meta in metas:
            if any(str(key).startswith("_kalm") for key in meta):
                raise InvalidInputError("metadata keys starting with '_kalm' are reserved")
        if not items:
            return []
        vectors = self.encoder.encode_document(
            items, task=self._document_task(), batch_size=self.config.batch_size, show_progress=show_progress
        )
        self.index.add(
            id_list, vectors, payloads=[{**m, TEXT_KEY: t} for m, t in zip(metas, items, strict=True)]
        )
        if self.bm25 is not None:
            self.bm25.add(id_list, items, payloads=[m or None for m in metas])
        return id_list

    def add_documents(
        self, documents: Sequence[Document | Mapping[str, Any]], *, show_progress: bool = False
    ) -> list[str]:
        """Chunk documents by tokens (with overlap) and add every chunk; returns chunk ids.

        A document that fits in one chunk keeps its id; longer ones become ``"{id}#{n}"`` with
        ``doc_id`` and ``chunk`` in their metadata.
        """
        chunker = ChunkerConfig(self.config.chunk_tokens, self.config.chunk_overlap)
        texts: list[str] = []
        ids: list[str] = []
        metas: list[dict[str, Any]] = []
        for n, raw in enumerate(documents):
            doc = raw if isinstance(raw, Document) else _document_from_mapping(raw, n)
            if not isinstance(doc.text, str) or not doc.text.strip():
                raise InvalidInputError(f"documents[{n}] has no text")
            check_unicode(doc.text, f"documents[{n}]['text']")
            if not isinstance(doc.metadata, Mapping):
                raise InvalidInputError(f"documents[{n}].metadata must be a dict")
            doc_id = doc.id or uuid.uuid4().hex
            pieces = chunk_text(doc.text, self.encoder.tokenizer, chunker)
            clash = sorted({"doc_id", "chunk"} & set(doc.metadata)) if len(pieces) > 1 else []
            if clash:
                raise InvalidInputError(
                    f"documents[{n}] (id {doc_id!r}) is split into {len(pieces)} chunks, whose metadata "
                    f"gets 'doc_id' and 'chunk', but its own metadata already has {clash}: rename them"
                )
            for i, piece in enumerate(pieces):
                texts.append(piece)
                if len(pieces) == 1:
                    ids.append(doc_id)
                    metas.append(dict(doc.metadata))
                else:
                    ids.append(f"{doc_id}#{i}")
                    metas.append({**doc.metadata, "doc_id": doc_id, "chunk": i})
        return self.add_texts(texts, ids=ids, metadatas=metas, show_progress=show_progress)

    def delete(self, ids: Sequence[str]) -> int:
        removed = self.index.delete(ids)
        if self.bm25 is not None:
            self.bm25.delete(ids)
        return removed

    # -- reading ------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        k: int = 5,
        filter: Any = None,
        hybrid: bool = False,
        instruction: str | None = None,
    ) -> list[RetrievedChunk]:
        """The ``k`` best chunks for ``query``; ``hybrid=True`` fuses dense and BM25 ranks (RRF)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty string")
        check_unicode(query, "query")
        if not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        vector = self.encoder.encode_query(
            [query], instruction=instruction or self.config.instruction, task=self.config.task
        )
        if not hybrid:
            return [_to_chunk(hit) for hit in self.index.search(vector, k=k, filter=filter)[0]]
        if self.bm25 is None:
            raise ConfigError(
                "hybrid search needs RetrieverConfig(hybrid_bm25=True) when the retriever is built"
            )
        from kalm_rag.index.fusion import reciprocal_rank_fusion

        fetch = max(k, self.config.candidates)
        dense = self.index.search(vector, k=fetch, filter=filter)[0]
        sparse = self.bm25.search(query, k=fetch, filter=filter)[0]
        fused = reciprocal_rank_fusion([dense, sparse], self.config.rrf_k, limit=k)
        texts = {hit.id: hit for hit in dense}
        missing = [hit.id for hit in fused if hit.id not in texts]
        stored = dict(zip(missing, self.index.get(missing), strict=True)) if missing else {}
        out = []
        for hit in fused:
            source = texts.get(hit.id)
            payload = source.payload if source is not None else getattr(stored.get(hit.id), "payload", None)
            out.append(_to_chunk(hit, payload))
        return out

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``retriever.json`` (model name, config), ``index/`` and ``bm25/`` atomically.

        ``path`` may be new, empty, or a folder kalm-rag saved; any other folder is refused
        unless ``overwrite=True``. Saves of one path are serialised across processes, and a
        retriever loaded from ``path`` refuses to save over it if another writer saved there
        since (its additions would be lost): load the folder again and redo the change.
        """
        from kalm_rag._atomic import SaveConflictError, atomic_folder

        target = Path(path)
        revision = uuid.uuid4().hex
        with atomic_folder(target, overwrite=overwrite, kind="retriever") as tmp:
            if self._origin is not None and self._origin[0] == resolved(target):
                on_disk = saved_revision(target)
                if on_disk != self._origin[1]:
                    raise SaveConflictError(
                        f"{target} was saved by another writer after this retriever was loaded from it; "
                        "saving now would drop that writer's changes: load it again and redo yours"
                    )
            self.index.save(tmp / "index")
            if self.bm25 is not None:
                self.bm25.save(tmp / "bm25")
            manifest = {
                "format_version": FORMAT_VERSION,
                "encoder": self.encoder.name_or_path,
                "dim": self.encoder.dim,
                "count": len(self.index),
                "revision": revision,
                "config": asdict(self.config),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        self._origin = (resolved(target), revision)
        return target

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, encoder: Encoder | None = None, **encoder_options: Any
    ) -> Retriever:
        """Open a saved retriever; the model named in it is loaded unless ``encoder`` is given."""
        from kalm_rag._atomic import recover_folder

        folder = Path(path)
        recover_folder(folder)  # a save that crashed between its renames
        manifest = read_retriever_manifest(folder)
        from kalm_rag.index.persist import load_index

        if encoder is None:
            from kalm_rag.encoder import Encoder

            encoder = Encoder.from_pretrained(manifest["encoder"], **encoder_options)
        if encoder.dim != manifest["dim"]:
            raise ConfigError(
                f"encoder dim {encoder.dim} does not match the saved index dim {manifest['dim']}"
            )
        try:
            config = RetrieverConfig.from_dict(manifest["config"])
        except (ConfigError, TypeError) as exc:
            raise InvalidInputError(f"{folder / MANIFEST}: field 'config' is invalid: {exc}") from exc
        index = load_index(folder / "index")
        if "count" in manifest and len(index) != manifest["count"]:
            raise InvalidInputError(
                f"retriever at {folder} is damaged: {MANIFEST} says {manifest['count']} items, "
                f"index/ holds {len(index)}"
            )
        bm25 = None
        if config.hybrid_bm25:
            if not (folder / "bm25").is_dir():
                raise InvalidInputError(
                    f"{folder} was saved with hybrid search but its bm25/ folder is missing"
                )
            from kalm_rag.index.bm25 import BM25Index

            bm25 = BM25Index.load(folder / "bm25")
            check_bm25_matches(folder, bm25, index)
        retriever = cls(encoder, index, config=config, bm25=bm25)
        retriever._origin = (resolved(folder), manifest.get("revision"))
        return retriever

    def _document_task(self) -> str | None:
        from kalm_rag.instructions import is_symmetric

        return self.config.task if self.config.task and is_symmetric(self.config.task) else None


def _document_from_mapping(raw: Mapping[str, Any], n: int) -> Document:
    if not isinstance(raw, Mapping) or "text" not in raw:
        raise InvalidInputError(f"documents[{n}] must be a Document or a mapping with a 'text' key")
    unknown = sorted(set(raw) - {"text", "id", "metadata"}, key=str)
    if unknown:
        raise InvalidInputError(
            f"documents[{n}] has unknown key(s) {unknown}; use 'text', 'id' and 'metadata'"
        )
    text, doc_id = raw["text"], raw.get("id")
    if not isinstance(text, str):
        raise InvalidInputError(f"documents[{n}]['text'] must be a string, got {type(text).__name__}")
    if doc_id is not None and (isinstance(doc_id, bool) or not isinstance(doc_id, str | int)):
        raise InvalidInputError(f"documents[{n}]['id'] must be a string, got {type(doc_id).__name__}")
    return Document(
        text,
        None if doc_id is None else str(doc_id),
        _metadata(raw.get("metadata"), f"documents[{n}]['metadata']"),
    )


def _metadata(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a dict or None, got {type(value).__name__}")
    return dict(value)


def _to_chunk(hit: SearchHit, payload: Mapping[str, Any] | None = None) -> RetrievedChunk:
    data = dict(payload if payload is not None else hit.payload or {})
    text = str(data.pop(TEXT_KEY, ""))
    return RetrievedChunk(hit.id, hit.score, text, data)
