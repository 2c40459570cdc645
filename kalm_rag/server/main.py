"""``run()``: load the model (and a saved Retriever) once, then serve with uvicorn.

This is what ``kalm-rag serve --model ... [--index DIR]`` calls.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kalm_rag.errors import require

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder
    from kalm_rag.retriever import Retriever
    from kalm_rag.server.config import ServerConfig


def load_resources(
    model: str | None,
    *,
    index: str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    backend: str = "auto",
) -> tuple[Encoder, Retriever | None]:
    """The encoder to serve, and the retriever at ``index`` if given.

    With only ``index``, the model named in the retriever folder is loaded; with both, ``model``
    is loaded once and also encodes the index's queries (its size must match the index).
    """
    from kalm_rag.encoder import Encoder
    from kalm_rag.retriever import Retriever

    if index is None:
        return Encoder.from_pretrained(model, device=device, dtype=dtype, backend=backend), None
    if model is None:
        retriever = Retriever.load(index, device=device, dtype=dtype, backend=backend)
        return retriever.encoder, retriever
    encoder = Encoder.from_pretrained(model, device=device, dtype=dtype, backend=backend)
    return encoder, Retriever.load(index, encoder=encoder)


def run(
    model: str | None = None,
    *,
    index: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
    dtype: str | None = None,
    backend: str = "auto",
    served_model_name: str | None = None,
    config: ServerConfig | None = None,
    log_level: str = "info",
    **uvicorn_options: Any,
) -> None:
    """Serve ``model`` (``None``: the packaged default) on ``host:port`` until interrupted.

    ``index``: a saved Retriever folder to answer ``/v1/search``. ``served_model_name``: the
    name clients send as ``model`` (default: the model's name). Binds 127.0.0.1 unless told
    otherwise; put a reverse proxy with authentication in front before exposing it.
    ``backend``: the Encoder's CPU inference backend ("auto", "torch", "openvino", "onnx").
    """
    require("fastapi", "server")
    uvicorn: Any = require("uvicorn", "server")
    from kalm_rag.server.app import create_app

    encoder, retriever = load_resources(model, index=index, device=device, dtype=dtype, backend=backend)
    app = create_app(encoder, retriever=retriever, config=config, model_name=served_model_name)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, **uvicorn_options)
