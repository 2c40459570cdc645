"""Saves never destroy user data: foreign folders and files are refused, concurrent writers are
serialised (or refused when they would drop another writer's changes), a crash between the
renames of a save is repaired on load, and failed saves/loads leave nothing behind."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kalm_rag import Encoder, InvalidInputError, Retriever
from kalm_rag._atomic import MARKER, SaveConflictError, atomic_folder, save_lock
from kalm_rag.index.brute import BruteForceIndex
from kalm_rag.index.hnsw import HnswIndex
from kalm_rag.index.persist import load_index
from kalm_rag.index.storage import LOCK_FILE, read_manifest
from kalm_rag.retriever import RetrieverConfig

REPO = Path(__file__).resolve().parents[2]


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.docx").write_bytes(b"four years of work")
    (path / "photos").mkdir()
    (path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8cat")
    return path


def _assert_untouched(path: Path) -> None:
    assert (path / "thesis.docx").read_bytes() == b"four years of work"
    assert (path / "photos" / "cat.jpg").read_bytes() == b"\xff\xd8cat"


@pytest.fixture(scope="module")
def retriever(default_encoder: Encoder) -> Retriever:
    r = Retriever(default_encoder, config=RetrieverConfig(batch_size=8))
    r.add_texts(["apt installs packages", "dpkg unpacks archives"], ids=["a", "b"])
    return r


# -- foreign folders and files are never replaced ----------------------------------------------


def test_retriever_save_refuses_a_folder_of_user_files(retriever: Retriever, tmp_path: Path) -> None:
    docs = _user_folder(tmp_path / "my-documents")
    with pytest.raises(InvalidInputError, match=r"did not write.*overwrite=True"):
        retriever.save(docs)
    _assert_untouched(docs)
    assert sorted(p.name for p in docs.iterdir()) == ["photos", "thesis.docx"]  # no marker, no temp


def test_retriever_save_refuses_a_plain_file(retriever: Retriever, tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(InvalidInputError, match="is a file"):
        retriever.save(target)
    with pytest.raises(InvalidInputError, match="is a file"):
        retriever.save(target, overwrite=True)
    assert target.read_text() == "keep me"


def test_retriever_save_replaces_empty_and_own_folders(retriever: Retriever, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    retriever.save(empty)
    assert (empty / MARKER).is_file() and (empty / "retriever.json").is_file()
    retriever.save(empty)  # our own folder: replaced
    assert len(Retriever.load(empty, encoder=retriever.encoder)) == 2
    # a folder saved before the marker existed is recognised by its manifest
    (empty / MARKER).unlink()
    retriever.save(empty)


def test_retriever_save_overwrite_true_replaces_a_foreign_folder(
    retriever: Retriever, tmp_path: Path
) -> None:
    docs = _user_folder(tmp_path / "scratch")
    retriever.save(docs, overwrite=True)
    assert not (docs / "thesis.docx").exists()
    assert len(Retriever.load(docs, encoder=retriever.encoder)) == 2


def test_encoder_save_pretrained_refuses_user_folder(default_encoder: Encoder, tmp_path: Path) -> None:
    docs = _user_folder(tmp_path / "models")
    with pytest.raises(InvalidInputError, match="did not write"):
        default_encoder.save_pretrained(docs)
    _assert_untouched(docs)


def test_cli_index_refuses_user_folder_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kalm_rag.cli import main

    docs = _user_folder(tmp_path / "my-documents")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "1", "text": "apt installs packages"}) + "\n")
    argv = ["index", str(corpus), "--out", str(docs), "--no-progress", "--dtype", "float32"]
    assert main(argv) == 2
    assert "did not write" in capsys.readouterr().err
    _assert_untouched(docs)
    assert main([*argv, "--overwrite"]) == 0
    assert (docs / "retriever.json").is_file() and not (docs / "thesis.docx").exists()


def test_langchain_store_save_refuses_user_folder(tmp_path: Path) -> None:
    pytest.importorskip("langchain_kalm")
    from langchain_kalm import KaLMEmbeddings, KaLMVectorStore

    store = KaLMVectorStore(KaLMEmbeddings(dtype="float32"))
    store.add_texts(["apt installs packages"])
    docs = _user_folder(tmp_path / "my-documents")
    with pytest.raises(InvalidInputError, match="did not write"):
        store.save(docs)
    _assert_untouched(docs)
    store.save(tmp_path / "fresh")
    store.save(tmp_path / "fresh")  # its own folder is replaced


def test_llamaindex_store_persist_refuses_user_folder_and_recovers(tmp_path: Path) -> None:
    pytest.importorskip("llama_index.vector_stores.kalm")
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.kalm import KaLMVectorStore

    store = KaLMVectorStore("brute")
    store.add([TextNode(text="apt", id_="n1", embedding=[1.0, 0.0, 0.0])])
    docs = _user_folder(tmp_path / "my-documents")
    with pytest.raises(InvalidInputError, match="did not write"):
        store.persist(str(docs))
    _assert_untouched(docs)
    store.persist(str(tmp_path / "s"))
    old = Path(tempfile.mkdtemp(prefix=".s.old-", dir=tmp_path))
    os.replace(tmp_path / "s", old / "x")  # a crash between the two renames of a save
    assert KaLMVectorStore.from_persist_path(str(tmp_path / "s"))._nodes.keys() == {"n1"}


def test_atomic_folder_refuses_file_target(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"), atomic_folder(target):
        pass
    assert target.read_text() == "x"


# -- concurrent writers --------------------------------------------------------------------------


def _hnsw_saver(path: str, seed: int, rounds: int) -> None:
    rng = np.random.default_rng(seed)
    index = HnswIndex(8)
    index.add([f"{seed}-{i}" for i in range(50)], rng.normal(size=(50, 8)).astype(np.float32))
    for _ in range(rounds):
        index.save(path)


def test_two_processes_saving_one_hnsw_index_never_break_it(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hnsw_saver, args=(str(path), s, 15)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _manifest, data = read_manifest(path)  # the folder index.json names exists
    assert data.is_dir()
    assert len(load_index(path)) == 50
    assert sorted(p.name for p in path.iterdir()) == sorted(["index.json", data.name])  # no lock left


def test_index_save_waits_for_the_lock_then_fails_clearly(tmp_path: Path) -> None:
    from kalm_rag._atomic import path_lock

    path = tmp_path / "idx"
    BruteForceIndex(4).save(path)
    script = (
        "import numpy as np; from kalm_rag.index.brute import BruteForceIndex\n"
        f"i = BruteForceIndex(4); i.add(['x'], np.ones((1, 4), np.float32)); i.save(r'{path}')\n"
    )
    env = {**os.environ, "KALM_RAG_LOCK_TIMEOUT": "0.5"}
    with path_lock(path / LOCK_FILE, path):  # another writer holds the index
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.returncode != 0
    assert "another process is saving to" in run.stderr
    assert len(load_index(path)) == 0  # unchanged


def test_folder_save_waits_for_a_writer_holding_the_folder(retriever: Retriever, tmp_path: Path) -> None:
    target = tmp_path / "r"
    retriever.save(target)
    # what Retriever.save / Encoder.save_pretrained / the stores run, in another process
    script = (
        "from kalm_rag._atomic import atomic_folder\n"
        f"with atomic_folder(r'{target}') as tmp:\n"
        "    (tmp / 'retriever.json').write_text('{}')\n"
    )
    env = {**os.environ, "KALM_RAG_LOCK_TIMEOUT": "0.5"}
    with save_lock(target):
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "another process is saving to" in run.stderr
    assert len(Retriever.load(target, encoder=retriever.encoder)) == 2


def test_second_retriever_writer_does_not_drop_the_first_writers_additions(
    retriever: Retriever, tmp_path: Path
) -> None:
    target = tmp_path / "shared"
    retriever.save(target)
    first = Retriever.load(target, encoder=retriever.encoder)
    second = Retriever.load(target, encoder=retriever.encoder)
    first.add_texts(["first writer's text"], ids=["one"])
    second.add_texts(["second writer's text"], ids=["two"])
    first.save(target)
    with pytest.raises(SaveConflictError, match="another writer"):
        second.save(target)
    again = Retriever.load(target, encoder=retriever.encoder)
    assert again.index.get(["one"])[0] is not None  # the first writer's addition survived
    again.add_texts(["second writer's text"], ids=["two"])
    again.save(target)  # reloaded: saving is fine, and so is saving twice
    again.save(target)
    assert len(Retriever.load(target, encoder=retriever.encoder)) == 4


# -- crashes -----------------------------------------------------------------------------------


def test_load_recovers_a_save_that_crashed_between_its_renames(retriever: Retriever, tmp_path: Path) -> None:
    target = tmp_path / "r"
    retriever.save(target)
    # the state a crash between `target -> .r.old-*/x` and `tmp -> target` leaves behind
    old = Path(tempfile.mkdtemp(prefix=".r.old-", dir=tmp_path))
    os.replace(target, old / "x")
    assert not target.exists()
    loaded = Retriever.load(target, encoder=retriever.encoder)
    assert len(loaded) == 2 and target.is_dir() and not old.exists()


def test_encoder_folder_recovered_after_crash_between_renames(
    default_encoder: Encoder, tmp_path: Path
) -> None:
    target = tmp_path / "enc"
    default_encoder.save_pretrained(target)
    old = Path(tempfile.mkdtemp(prefix=".enc.old-", dir=tmp_path))
    os.replace(target, old / "x")
    reloaded = Encoder.from_pretrained(target, dtype="float32")
    assert reloaded.dim == default_encoder.dim and target.is_dir()


def test_killed_save_leaves_no_temp_folder_after_the_next_save(retriever: Retriever, tmp_path: Path) -> None:
    target = tmp_path / "r"
    script = (
        "import os, signal\n"
        "from kalm_rag._atomic import atomic_folder\n"
        f"with atomic_folder(r'{target}') as tmp:\n"
        "    (tmp / 'half-written').write_text('x')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"  # killed mid-save
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert run.returncode == -9
    assert list(tmp_path.glob(".r.tmp-*")), "the killed save should have left its temp folder"
    retriever.save(target)
    assert not list(tmp_path.glob(".r.tmp-*"))


# -- embedded Qdrant -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [2**70, 2**64 + 3, "x\ud800", {"k\ud800": 1}], ids=repr)
def test_qdrant_rejected_add_changes_nothing(bad: Any) -> None:
    from kalm_rag.index.qdrant import QdrantIndex

    index = QdrantIndex(8)
    n = 5000
    payloads: list[dict[str, Any]] = [{"a": i} for i in range(n)]
    payloads[-1] = {"a": bad}
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="payload #4999"):
        index.add([str(i) for i in range(n)], vectors, payloads=payloads)
    assert len(index) == 0
    index.close()


def test_qdrant_snapshot_files_stay_sparse_and_failed_loads_leave_no_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kalm_rag.index.qdrant import QdrantIndex

    index = QdrantIndex(8)
    index.add([str(i) for i in range(60)], np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32))
    index.save(tmp_path / "q")
    index.close()
    on_disk = sum(p.stat().st_blocks * 512 for p in (tmp_path / "q").rglob("*") if p.is_file())
    assert on_disk < 8 * 2**20, f"saved 60 points as {on_disk / 2**20:.0f} MiB on disk"
    assert len(load_index(tmp_path / "q")) == 60

    # damage every shard file, then load three times: each fails and leaves no working copy
    _, data = read_manifest(tmp_path / "q")
    for file in (data / "shard").rglob("*"):
        if file.is_file():
            file.write_bytes(b"\x00garbage")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for _ in range(3):
        with pytest.raises(InvalidInputError, match="is damaged"):
            load_index(tmp_path / "q")
    assert list(scratch.iterdir()) == []


def test_leftover_cleanup_only_touches_this_targets_temp_folders(tmp_path: Path) -> None:
    other = tmp_path / ".idx1.tmp-belongs-to-idx1"  # what an unescaped glob "idx[1]" would match
    other.mkdir()
    (other / "data").write_text("another save in progress")
    with atomic_folder(tmp_path / "idx[1]") as tmp:
        (tmp / "retriever.json").write_text("{}")
    assert (other / "data").read_text() == "another save in progress"
    assert (tmp_path / "idx[1]" / MARKER).is_file()
