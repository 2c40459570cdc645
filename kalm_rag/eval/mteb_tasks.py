"""Local task folders as mteb tasks, so ``mteb.evaluate`` runs on them without the hub.

mteb's own loaders always contact the hub, so each task here overrides ``load_data`` and reads
the folder with :mod:`kalm_rag.eval.datasets` / :mod:`kalm_rag.beir`. A retrieval folder with
per-language qrels (``qrels/test_<lang>.tsv``) becomes a multilingual task with one subset per
query language; bitext folders get one subset per language pair.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kalm_rag.beir import load_retrieval_task, read_qrels
from kalm_rag.errors import InvalidInputError, require
from kalm_rag.eval.datasets import (
    ALL_LANGUAGES,
    bitext_pair_folders,
    discover_tasks,
    load_bitext_task,
    load_sts_task,
    retrieval_splits,
    task_kind,
)

# Region variants whose script differs from the language's default one.
_SCRIPT_OVERRIDES = {"zh_TW": "zho-Hant", "zh_HK": "zho-Hant", "sr_Latn": "srp-Latn"}


def mteb_language(tag: str) -> str:
    """A locale tag such as ``de``, ``pt_BR`` or ``zh_CN`` as mteb's ``deu-Latn`` style code."""
    languages: Any = require("mteb.languages", "eval")
    if tag in _SCRIPT_OVERRIDES:
        return _SCRIPT_OVERRIDES[tag]
    base = tag.replace("-", "_").split("_")[0].lower()
    # mteb ships the ISO tables it validates against; use them rather than a copy
    tables = Path(languages.__file__).parent
    iso1 = json.loads((tables / "iso_639_1_to_3.json").read_text(encoding="utf-8"))
    scripts = json.loads((tables / "iso_639_3_to_default_script.json").read_text(encoding="utf-8"))
    code = iso1.get(base, base)
    if code not in languages.ISO_TO_LANGUAGE or code not in scripts:
        raise InvalidInputError(
            f"cannot map language tag {tag!r} to an ISO 639-3 code with a script; "
            "name the folder's languages with ISO 639-1/639-3 codes (en, de, zh_CN, ...)"
        )
    return f"{code}-{scripts[code]}"


def local_task(folder: str | Path, *, name: str | None = None, language: str = "eng-Latn") -> Any:
    """The mteb task for one folder (retrieval, bitext mining or STS, detected from its files).

    ``language`` (mteb code) is used for single-language folders whose files do not say it.
    """
    path = Path(folder)
    kind = task_kind(path)
    task_name = name or path.resolve().name
    if kind == "retrieval":
        return _retrieval_task(path, task_name, language)
    if kind == "bitext":
        return _bitext_task(path, task_name)
    return _sts_task(path, task_name, language)


def local_tasks(root: str | Path, *, names: Sequence[str] | None = None) -> list[Any]:
    """Every task folder under ``root`` (or ``root`` itself), optionally only those ``names``."""
    folders = discover_tasks(root)
    if names:
        known = {f.name: f for f in folders}
        missing = [n for n in names if n not in known]
        if missing:
            raise InvalidInputError(f"no task folders {missing} in {root}; found {sorted(known)}")
        folders = [known[n] for n in names]
    return [local_task(folder) for folder in folders]


# -- task builders -----------------------------------------------------------------------------
def _metadata(path: Path, name: str, task_type: Any, main_score: str, eval_langs: Any) -> Any:
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=name,
        description=f"Local task read from {path} by kalm_rag.eval.mteb_tasks.",
        dataset={"path": str(path.resolve()), "revision": folder_revision(path)},
        type=task_type,
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=eval_langs,
        main_score=main_score,
        reference=None,
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
    )


def _retrieval_task(path: Path, name: str, language: str) -> Any:
    require("mteb", "eval")
    from datasets import Dataset  # type: ignore[import-untyped]
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    splits = retrieval_splits(path)
    per_language = {lang: split for lang, split in splits.items() if lang != ALL_LANGUAGES}
    eval_langs: Any = {lang: [mteb_language(lang)] for lang in per_language} if per_language else [language]

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        full = load_retrieval_task(path, split="test")
        corpus = Dataset.from_dict(
            {"id": list(full.corpus), "text": list(full.corpus.values()), "title": [""] * len(full.corpus)}
        )

        def split_data(qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
            unknown = sorted(set(qrels) - set(full.queries))
            if unknown:
                raise InvalidInputError(
                    f"{path}: qrels name queries missing from test.tsv, e.g. {unknown[:3]}"
                )
            ids = list(qrels)
            queries = Dataset.from_dict({"id": ids, "text": [full.queries[q] for q in ids]})
            return {"corpus": corpus, "queries": queries, "relevant_docs": qrels, "top_ranked": None}

        if per_language:
            self.dataset = {
                lang: {"test": split_data(read_qrels(path / "qrels" / f"{split}.tsv"))}
                for lang, split in per_language.items()
            }
        else:
            self.dataset = {"default": {"test": split_data(full.qrels)}}
        self.data_loaded = True

    return _instantiate(
        AbsTaskRetrieval, name, _metadata(path, name, "Retrieval", "ndcg_at_10", eval_langs), load_data
    )


def _bitext_task(path: Path, name: str) -> Any:
    require("mteb", "eval")
    from datasets import Dataset  # type: ignore[import-untyped]
    from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining

    pair_names = [folder.name for folder in bitext_pair_folders(path)]  # the texts load later
    eval_langs = {
        pair: [mteb_language(lang) for lang in pair.split("-", 1)] if "-" in pair else ["eng-Latn"]
        for pair in pair_names
    }

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {
            pair.name: {
                "test": Dataset.from_dict({"sentence1": pair.sentences1, "sentence2": pair.sentences2})
            }
            for pair in load_bitext_task(path)
        }
        self.data_loaded = True

    return _instantiate(
        AbsTaskBitextMining, name, _metadata(path, name, "BitextMining", "accuracy", eval_langs), load_data
    )


def _sts_task(path: Path, name: str, language: str) -> Any:
    require("mteb", "eval")
    from datasets import Dataset  # type: ignore[import-untyped]
    from mteb.abstasks.sts import AbsTaskSTS

    pairs = load_sts_task(path)

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        data = {"sentence1": pairs.sentences1, "sentence2": pairs.sentences2, "score": pairs.scores}
        self.dataset = {"default": {"test": Dataset.from_dict(data)}}
        self.data_loaded = True

    attributes = {"min_score": min(pairs.scores), "max_score": max(pairs.scores)}
    metadata = _metadata(path, name, "STS", "cosine_spearman", [language])
    return _instantiate(AbsTaskSTS, name, metadata, load_data, attributes)


def _instantiate(
    base: type, name: str, metadata: Any, load_data: Any, attributes: dict[str, Any] | None = None
) -> Any:
    # mteb reads metadata from the class, so each folder gets its own small subclass
    namespace = {"metadata": metadata, "load_data": load_data, **(attributes or {})}
    task_class = type(f"Local{_identifier(name)}", (base,), namespace)
    return task_class()


def _identifier(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def folder_revision(path: Path) -> str:
    """A short content fingerprint of a task folder, recorded as the dataset revision.

    File names, sizes and the first MiB of each file: cheap on big corpora, and it changes
    whenever the data is rebuilt.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(str(file.stat().st_size).encode())
        with file.open("rb") as f:
            digest.update(f.read(1 << 20))
    return "local-" + digest.hexdigest()[:12]
