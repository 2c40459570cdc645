"""The mteb adapter and local mteb tasks: mteb.evaluate on tiny folders, prompts per side, metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kalm_rag import Encoder, ModelConfig
from kalm_rag.errors import InvalidInputError
from kalm_rag.eval.metrics import bitext_accuracy, retrieval_metrics, spearman, top_k_run
from kalm_rag.eval.mteb_tasks import local_task, mteb_language
from kalm_rag.eval.scoring import dense_pair_scores, dense_scores, encode_side
from kalm_rag.instructions import KALM_TEMPLATE
from kalm_rag.mteb_adapter import KalmMtebEncoder

mteb = pytest.importorskip("mteb")

DOCS = {
    "d01": "Python is a programming language that lets you work quickly.",
    "d02": "The Linux kernel manages memory, processes and hardware drivers.",
    "d03": "A web server answers HTTP requests from browsers.",
    "d04": "Git is a distributed version control system for source code.",
    "d05": "SQLite is a small, fast, self-contained SQL database engine.",
    "d06": "The printer driver converts documents into a format the printer understands.",
    "d07": "An image editor lets you crop, resize and retouch photographs.",
    "d08": "A music player plays MP3 and Ogg audio files from your collection.",
    "d09": "The compiler translates C source code into machine code.",
    "d10": "A firewall filters network traffic according to rules.",
    "d11": "A spreadsheet program organises numbers in rows and columns.",
    "d12": "An e-mail client sends, receives and organises electronic mail.",
    "d13": "A backup tool copies your files to another disk to protect them from loss.",
    "d14": "A text editor for programmers with syntax highlighting.",
    "d15": "A chess engine that calculates strong moves.",
    "d16": "A weather application shows the forecast for your city.",
    "d17": "A font package providing typefaces for many scripts.",
    "d18": "A password manager stores your passwords in an encrypted vault.",
    "d19": "A video player for films and streaming media.",
    "d20": "A tool to compress and decompress zip archives.",
}
QUERIES = {
    "en-1": ("version control for code", "d04"),
    "en-2": ("play my mp3 songs", "d08"),
    "en-3": ("store passwords securely", "d18"),
    "en-4": ("relational database library", "d05"),
    "en-5": ("block unwanted network connections", "d10"),
    "de-1": ("Passwörter sicher speichern", "d18"),
    "de-2": ("Wettervorhersage für meine Stadt", "d16"),
    "de-3": ("Schach spielen gegen den Computer", "d15"),
}
PAIRS = [
    ("Open the file", "Datei öffnen"),
    ("Save the document", "Dokument speichern"),
    ("The printer is out of paper", "Der Drucker hat kein Papier mehr"),
    ("Connection refused by the server", "Verbindung vom Server abgelehnt"),
    ("Delete all selected items?", "Alle ausgewählten Elemente löschen?"),
]
STS = [
    ("A man is playing a guitar.", "Someone plays a guitar.", 0.9),
    ("A cat sleeps on the sofa.", "The stock market fell today.", 0.0),
    ("The weather is sunny.", "It is a bright sunny day.", 0.8),
    ("He is cooking pasta.", "A child is riding a bicycle.", 0.1),
    ("The train was late.", "The train arrived behind schedule.", 0.85),
    ("She reads a novel.", "Parliament passed a new law.", 0.05),
]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _qrels(path: Path, items: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in items))


@pytest.fixture(scope="module")
def tasks_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    retrieval = root / "TinyRetrieval"
    _jsonl(retrieval / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in DOCS.items()])
    _jsonl(retrieval / "queries.jsonl", [{"_id": k, "text": v[0]} for k, v in QUERIES.items()])
    _qrels(retrieval / "qrels" / "test.tsv", [(q, d) for q, (_, d) in QUERIES.items()])
    for lang in ("en", "de"):
        _qrels(
            retrieval / "qrels" / f"test_{lang}.tsv",
            [(q, d) for q, (_, d) in QUERIES.items() if q[:2] == lang],
        )
    _jsonl(root / "TinyBitext" / "en-de" / "sentences1.jsonl", [{"text": a} for a, _ in PAIRS])
    _jsonl(root / "TinyBitext" / "en-de" / "sentences2.jsonl", [{"text": b} for _, b in PAIRS])
    _jsonl(
        root / "TinySTS" / "pairs.jsonl", [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in STS]
    )
    return root


def _loader(texts: list[str]) -> Any:
    from datasets import Dataset
    from torch.utils.data import DataLoader

    return DataLoader(Dataset.from_dict({"text": texts}), batch_size=3)


def _scores(result: Any) -> dict[str, dict[str, dict[str, Any]]]:
    return {tr.task_name: {s["hf_subset"]: s for s in tr.scores["test"]} for tr in result.task_results}


def test_mteb_evaluate_on_tiny_local_tasks_agrees_with_our_metrics(
    default_encoder: Encoder, tasks_root: Path, tmp_path: Path
) -> None:
    model = KalmMtebEncoder(default_encoder)
    assert isinstance(model, mteb.models.EncoderProtocol)
    tasks = [local_task(tasks_root / name) for name in ("TinyRetrieval", "TinyBitext", "TinySTS")]
    cache = mteb.ResultCache(cache_path=tmp_path)
    scores = _scores(mteb.evaluate(model, tasks, cache=cache, show_progress_bar=False))

    # retrieval: one subset per query language, the same nDCG@10 as our trec_eval plumbing
    assert set(scores["TinyRetrieval"]) == {"en", "de"}
    doc_ids = list(DOCS)
    for lang in ("en", "de"):
        ids = [q for q in QUERIES if q.startswith(lang)]
        matrix = dense_scores(default_encoder, [QUERIES[q][0] for q in ids], [DOCS[d] for d in doc_ids])
        ours = retrieval_metrics({q: {QUERIES[q][1]: 1} for q in ids}, top_k_run(matrix, ids, doc_ids))
        assert scores["TinyRetrieval"][lang]["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
        assert scores["TinyRetrieval"][lang]["mrr_at_10"] == pytest.approx(ours["mrr@10"], abs=1e-4)
    assert scores["TinyRetrieval"]["en"]["ndcg_at_10"] > 0.9  # a real model finds these

    first, second = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    left = encode_side(default_encoder, first, side="query", task="bitext")
    right = encode_side(default_encoder, second, side="document", task="bitext")
    assert scores["TinyBitext"]["en-de"]["accuracy"] == pytest.approx(bitext_accuracy(left @ right.T))

    predicted = dense_pair_scores(default_encoder, [a for a, _, _ in STS], [b for _, b, _ in STS])
    expected = spearman(predicted, [s for _, _, s in STS])
    assert scores["TinySTS"]["default"]["cosine_spearman"] == pytest.approx(expected, abs=1e-6)
    assert expected > 0.7

    # results are filed under the model's real name and weights revision
    meta = model.mteb_model_meta
    assert meta.name == "sentence-transformers/all-MiniLM-L6-v2" and meta.revision.startswith("sha256-")
    saved = tmp_path / "results" / "sentence-transformers__all-MiniLM-L6-v2" / meta.revision / "TinySTS.json"
    assert saved.is_file(), sorted(p.name for p in tmp_path.rglob("*.json"))


def _kalm_encoder(folder: Path) -> Encoder:
    config = ModelConfig(pooling="mean", is_causal=False, instruction_template=KALM_TEMPLATE)
    return Encoder.from_pretrained(folder, config=config, dtype="float32")


def test_instructions_go_to_queries_for_retrieval_and_both_sides_for_sts(
    tiny_qwen2_dir: Path, tasks_root: Path
) -> None:
    encoder = _kalm_encoder(tiny_qwen2_dir)
    model = KalmMtebEncoder(encoder, instructions={"TinySTS": "Find paraphrases"}, cache_size=0)
    texts = ["the query is fast", "install the package", "kernel driver"]
    retrieval = local_task(tasks_root / "TinyRetrieval").metadata
    sts = local_task(tasks_root / "TinySTS").metadata
    bitext = local_task(tasks_root / "TinyBitext").metadata
    query_type, document_type = mteb.types.PromptType.query, mteb.types.PromptType.document

    def run(meta: Any, prompt_type: Any) -> np.ndarray:
        return model.encode(_loader(texts), task_metadata=meta, hf_split="test", hf_subset="x",
                            prompt_type=prompt_type)  # fmt: skip

    np.testing.assert_allclose(
        run(retrieval, query_type), encoder.encode_query(texts, task="retrieval"), atol=1e-6
    )
    np.testing.assert_allclose(run(retrieval, document_type), encoder.encode(texts), atol=1e-6)
    assert not np.allclose(run(retrieval, query_type), encoder.encode(texts), atol=1e-3)
    for side in (None, query_type, document_type):  # symmetric: the override on both sides
        expected = encoder.encode_query(texts, instruction="Find paraphrases")
        np.testing.assert_allclose(run(sts, side), expected, atol=1e-6)
    np.testing.assert_allclose(run(bitext, None), encoder.encode_query(texts, task="bitext"), atol=1e-6)
    # an mteb task's own query prompt is used when no override names the task
    prompted = retrieval.model_copy(update={"prompt": {"query": "Find the software package"}})
    expected = encoder.encode_query(texts, instruction="Find the software package")
    np.testing.assert_allclose(run(prompted, query_type), expected, atol=1e-6)


def test_e5_style_prompts_per_side(tiny_bert_dir: Path, tasks_root: Path) -> None:
    config = ModelConfig(pooling="mean", query_prompt="query: ", document_prompt="passage: ")
    encoder = Encoder.from_pretrained(tiny_bert_dir, config=config, dtype="float32")
    model = KalmMtebEncoder(encoder)
    texts = ["a small python library", "the kernel driver"]
    retrieval = local_task(tasks_root / "TinyRetrieval").metadata
    sts = local_task(tasks_root / "TinySTS").metadata
    document = mteb.types.PromptType.document
    out = model.encode(
        _loader(texts), task_metadata=retrieval, hf_split="test", hf_subset="en", prompt_type=document
    )
    np.testing.assert_allclose(out, encoder.encode(texts, prompt="passage: "), atol=1e-6)
    out = model.encode(
        _loader(texts), task_metadata=sts, hf_split="test", hf_subset="default", prompt_type=document
    )
    np.testing.assert_allclose(
        out, encoder.encode(texts, prompt="query: "), atol=1e-6
    )  # e5: symmetric -> query


def test_local_model_metadata_and_loader_round_trip(tiny_bert_dir: Path, tasks_root: Path) -> None:
    model = KalmMtebEncoder.from_pretrained(str(tiny_bert_dir), dtype="float32")
    meta = model.mteb_model_meta
    assert meta.name == f"local/{tiny_bert_dir.name}"
    assert meta.revision.startswith("sha256-") and meta.embed_dim == model.encoder.dim
    assert meta.n_parameters == sum(p.numel() for p in model.encoder.model.parameters())
    reloaded = meta.load_model()  # mteb calls the loader recorded in the metadata
    assert isinstance(reloaded, KalmMtebEncoder)
    texts = ["kernel driver", "python library"]
    sts = local_task(tasks_root / "TinySTS").metadata
    a = model.encode(_loader(texts), task_metadata=sts, hf_split="test", hf_subset="default")
    b = reloaded.encode(_loader(texts), task_metadata=sts, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(model.similarity_pairwise(a, b), np.ones(2), atol=1e-5)


def test_language_tags_become_mteb_codes(tasks_root: Path) -> None:
    assert [mteb_language(t) for t in ("en", "de", "zh_CN", "pt_BR", "ja", "uk")] == [
        "eng-Latn", "deu-Latn", "zho-Hans", "por-Latn", "jpn-Jpan", "ukr-Cyrl"
    ]  # fmt: skip
    assert local_task(tasks_root / "TinyRetrieval").metadata.eval_langs == {
        "de": ["deu-Latn"],
        "en": ["eng-Latn"],
    }
    assert local_task(tasks_root / "TinyBitext").metadata.eval_langs == {"en-de": ["eng-Latn", "deu-Latn"]}
    with pytest.raises(InvalidInputError, match="cannot map language tag"):
        mteb_language("qq_ZZ")
    with pytest.raises(InvalidInputError, match="not a task folder"):
        local_task(tasks_root.parent)


@pytest.mark.slow
def test_lee_sts_dev_baseline_through_mteb(default_encoder: Encoder, dev_data: Path) -> None:
    result = mteb.evaluate(KalmMtebEncoder(default_encoder), [local_task(dev_data / "LeeSTS")], cache=None,
                           show_progress_bar=False)  # fmt: skip
    assert _scores(result)["LeeSTS"]["default"]["main_score"] == pytest.approx(0.526, abs=0.01)
