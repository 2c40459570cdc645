"""The FastAPI app: ``POST /v1/embeddings`` (OpenAI-compatible), ``POST /v1/search``,
``GET /v1/models``, ``GET /health``. Requests never name files: the model and the index are
fixed when the app is built, and the ``model`` field is only compared with the served name."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kalm_rag.errors import KalmRagError
from kalm_rag.server.batcher import MicroBatcher, QueueFullError
from kalm_rag.server.config import ServerConfig
from kalm_rag.server.errors import APIError, bad_request, validation_message
from kalm_rag.server.limits import BodyLimit
from kalm_rag.server.responses import embeddings_response, truncate_rows
from kalm_rag.server.schemas import EmbeddingRequest, SearchRequest
from kalm_rag.server.validation import check_inputs, encode_fn, prefix_for

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder
    from kalm_rag.retriever import Retriever


def create_app(
    encoder: Encoder,
    *,
    retriever: Retriever | None = None,
    config: ServerConfig | None = None,
    model_name: str | None = None,
) -> FastAPI:
    """Build the app around a loaded ``encoder`` (and optionally a ``retriever`` to search)."""
    cfg = config or ServerConfig()
    served = model_name or encoder.name_or_path
    accepted = {served, encoder.name_or_path}
    batcher = MicroBatcher(
        encode_fn(encoder, cfg.encode_batch_size),
        max_batch_texts=cfg.max_batch_texts,
        max_wait_ms=cfg.max_wait_ms,
        max_queue=cfg.max_queue,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="kalm-rag", lifespan=lifespan)
    app.state.batcher = batcher

    # counts the bytes actually received: a chunked body has no Content-Length to check
    app.add_middleware(BodyLimit, max_body_bytes=cfg.max_body_bytes)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return _error(bad_request(message, param=param))

    def check_model(model: str | None) -> None:
        if model is not None and model not in accepted:
            raise APIError(
                404,
                f"model {model!r} is not served here; this server serves {served!r}",
                param="model",
                code="model_not_found",
            )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": served,
            "dim": encoder.dim,
            "index": {"loaded": retriever is not None, "count": len(retriever) if retriever else 0},
            "queue": batcher.pending,
            "batches": batcher.batches,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "kalm-rag"}]}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        check_model(body.model)
        texts = check_inputs(body.input, cfg)
        if body.dimensions is not None and not 1 <= body.dimensions <= encoder.dim:
            raise bad_request(f"dimensions must be between 1 and {encoder.dim}", param="dimensions")
        prefix = prefix_for(encoder, body)
        try:
            vectors, tokens = await batcher.encode([prefix + text for text in texts])
        except QueueFullError as exc:
            raise APIError(503, f"server busy: {exc}; retry later", type="server_error",
                           code="overloaded", headers={"Retry-After": "1"}) from None  # fmt: skip
        except KalmRagError as exc:
            raise bad_request(str(exc), param="input") from None
        vectors = truncate_rows(vectors, body.dimensions, normalize=encoder.config.normalize)
        return embeddings_response(
            vectors, encoding_format=body.encoding_format, model=served, prompt_tokens=sum(tokens)
        )

    @app.post("/v1/search")
    async def search(body: SearchRequest) -> dict[str, Any]:
        check_model(body.model)
        if retriever is None:
            raise APIError(404, "no index is loaded; start the server with --index DIR", code="no_index")
        if not body.query.strip() or len(body.query) > cfg.max_input_chars:
            raise bad_request(f"query must be 1 to {cfg.max_input_chars} characters", param="query")
        if not 1 <= body.k <= cfg.max_k:
            raise bad_request(f"k must be between 1 and {cfg.max_k}", param="k")
        try:
            chunks = await batcher.run_on_model_thread(
                retriever.search, body.query, k=body.k, filter=body.filter, hybrid=body.hybrid,
                instruction=body.instruction,
            )  # fmt: skip
        except KalmRagError as exc:
            raise bad_request(str(exc)) from None
        data = [{"id": c.id, "score": c.score, "text": c.text, "metadata": c.metadata} for c in chunks]
        return {"object": "list", "model": served, "data": data}

    return app


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content=exc.body(), headers=exc.headers)
