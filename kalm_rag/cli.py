"""The ``kalm-rag`` command: index, search, encode, serve."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kalm_rag.errors import KalmRagError

BACKENDS = ("brute", "hnsw", "qdrant")


def _add_model_arguments(parser: argparse.ArgumentParser, *, backend_flag: bool = True) -> None:
    parser.add_argument(
        "--model", default=None, help="model alias, folder or hub id (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="auto, float32, bfloat16 or int8 (default: auto)")
    # `index` already uses --backend for the vector index, so there it is only --encoder-backend
    flags = ["--backend", "--encoder-backend"] if backend_flag else ["--encoder-backend"]
    parser.add_argument(
        *flags, dest="encoder_backend", default="auto", choices=("auto", "torch", "openvino", "onnx"),
        help="CPU inference backend (default: auto, the fastest that passes the accuracy guard)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kalm-rag", description="Instruction-aware embeddings, indexes and search."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="embed documents into a retriever folder")
    index.add_argument(
        "inputs", nargs="+", type=Path, help=".jsonl files (one document a line) or text files"
    )
    index.add_argument(
        "--out",
        required=True,
        type=Path,
        help="retriever folder to write (new, empty, or one kalm-rag wrote; replaced atomically)",
    )
    index.add_argument("--overwrite", action="store_true", help="replace --out even if it holds other files")
    _add_model_arguments(index, backend_flag=False)
    index.add_argument(
        "--backend", choices=BACKENDS, default="brute", help="vector index engine (default: brute)"
    )
    index.add_argument("--text-field", default="text", help="JSONL field with the text (default: text)")
    index.add_argument("--id-field", default="id", help="JSONL field with the id (default: id, or _id)")
    index.add_argument("--chunk-tokens", type=int, default=256, help="tokens per chunk (default: 256)")
    index.add_argument("--chunk-overlap", type=int, default=32, help="tokens shared by chunks (default: 32)")
    index.add_argument("--batch-size", type=int, default=32)
    index.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    search = sub.add_parser("search", help="search a retriever folder")
    search.add_argument("index", type=Path, help="retriever folder written by `kalm-rag index`")
    search.add_argument("query", help="query text")
    search.add_argument("-k", type=int, default=5, help="number of hits (default: 5)")
    search.add_argument("--hybrid", action="store_true", help="fuse dense and BM25 results (RRF)")
    search.add_argument("--filter", default=None, help='JSON payload filter, e.g. \'{"lang": "en"}\'')
    search.add_argument("--instruction", default=None, help="query instruction (instruction-aware models)")
    search.add_argument("--json", action="store_true", help="print hits as JSON lines")
    _add_model_arguments(search)

    encode = sub.add_parser("encode", help="embed texts into a .npy file")
    encode.add_argument(
        "input", type=Path, help="text file (one text a line) or .jsonl with a text field; - for stdin"
    )
    encode.add_argument("--out", required=True, type=Path, help="output .npy file (n x dim float32)")
    _add_model_arguments(encode)
    encode.add_argument(
        "--query", action="store_true", help="encode as queries (adds the instruction/prompt)"
    )
    encode.add_argument("--instruction", default=None)
    encode.add_argument("--task", default=None, help="task type for the default instruction")
    encode.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka truncation")
    encode.add_argument("--batch-size", type=int, default=32)
    encode.add_argument("--text-field", default="text")

    serve = sub.add_parser("serve", help="OpenAI-compatible embeddings server (+ /v1/search)")
    _add_model_arguments(serve)
    serve.add_argument("--index", type=Path, default=None, help="retriever folder to serve under /v1/search")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    return parser


def _encoder(args: argparse.Namespace) -> Any:
    from kalm_rag.encoder import Encoder

    encoder = Encoder.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, backend=args.encoder_backend
    )
    choice = encoder.backend_choice
    if choice is not None:  # the one-line log of what backend="auto" chose and why
        print(f"kalm-rag: encoding with {encoder.backend} ({choice.reason})", file=sys.stderr)
    return encoder


def _cmd_index(args: argparse.Namespace) -> None:
    from kalm_rag.docfiles import read_documents
    from kalm_rag.retriever import Retriever, RetrieverConfig

    docs = read_documents(args.inputs, text_field=args.text_field, id_field=args.id_field)
    encoder = _encoder(args)
    config = RetrieverConfig(
        chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap, batch_size=args.batch_size
    )
    index: Any = None
    if args.backend == "hnsw":
        from kalm_rag.index.hnsw import HnswIndex

        index = HnswIndex(encoder.dim)
    elif args.backend == "qdrant":
        from kalm_rag.index.qdrant import QdrantIndex

        index = QdrantIndex(encoder.dim)
    retriever = Retriever(encoder, index, config=config)
    ids = retriever.add_documents(docs, show_progress=not args.no_progress)
    retriever.save(args.out, overwrite=args.overwrite)
    print(f"indexed {len(docs)} documents as {len(ids)} chunks with {encoder.name_or_path} into {args.out}")


def _cmd_search(args: argparse.Namespace) -> None:
    from kalm_rag.errors import InvalidInputError
    from kalm_rag.retriever import Retriever

    try:
        flt = json.loads(args.filter) if args.filter else None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--filter is not valid JSON: {exc}") from exc
    options = {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v is not None}
    options["backend"] = args.encoder_backend
    encoder = _encoder(args) if args.model else None
    retriever = Retriever.load(args.index, encoder=encoder, **options)
    hits = retriever.search(
        args.query, k=args.k, filter=flt, hybrid=args.hybrid, instruction=args.instruction
    )
    for rank, hit in enumerate(hits, 1):
        if args.json:
            print(
                json.dumps(
                    {
                        "rank": rank,
                        "id": hit.id,
                        "score": hit.score,
                        "text": hit.text,
                        "metadata": hit.metadata,
                    }
                )
            )
        else:
            snippet = " ".join(hit.text.split())[:100]
            print(f"{rank:>2}. {hit.score:.4f}  {hit.id}  {snippet}")


def _read_lines(path: Path, text_field: str) -> list[str]:
    from kalm_rag.docfiles import read_jsonl_documents, read_lines
    from kalm_rag.errors import InvalidInputError

    if str(path) == "-":
        data = sys.stdin.buffer.read()
        try:
            lines = io.StringIO(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise InvalidInputError(f"<stdin>:{line}: not UTF-8 text") from None
        texts = [line.rstrip("\r\n") for line in lines if line.strip()]
    elif not path.is_file():
        raise InvalidInputError(f"input file {path} does not exist")
    elif path.suffix == ".jsonl":
        texts = [d.text for d in read_jsonl_documents(path, text_field=text_field)]
    else:
        texts = [line.rstrip("\r\n") for line in read_lines(path) if line.strip()]
    if not texts:
        raise InvalidInputError(f"no texts in {path}: nothing to encode")
    return texts


def _cmd_encode(args: argparse.Namespace) -> None:
    import numpy as np

    from kalm_rag._atomic import atomic_file

    texts = _read_lines(args.input, args.text_field)
    encoder = _encoder(args)
    options = {"batch_size": args.batch_size, "truncate_dim": args.truncate_dim}
    if args.query:
        vectors = encoder.encode_query(texts, instruction=args.instruction, task=args.task, **options)
    else:
        vectors = encoder.encode_document(texts, task=args.task, **options)
    with atomic_file(args.out) as tmp, tmp.open("wb") as f:
        np.save(f, vectors)
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {args.out}")


def _cmd_serve(args: argparse.Namespace) -> None:
    from kalm_rag.server import run

    run(
        args.model, index=args.index, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
        backend=args.encoder_backend,
    )  # fmt: skip


COMMANDS = {"index": _cmd_index, "search": _cmd_search, "encode": _cmd_encode, "serve": _cmd_serve}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except KalmRagError as exc:
        print(f"kalm-rag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
