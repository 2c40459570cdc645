"""The Encoder: texts in, float32 embeddings out, with the model's prompts and instructions."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kalm_rag.config import CONFIG_FILENAME, ModelConfig
from kalm_rag.errors import InvalidInputError
from kalm_rag.instructions import TaskType
from kalm_rag.texts import check_unicode, validate_texts

if TYPE_CHECKING:
    import torch

    from kalm_rag.backends.guard import GuardPolicy

FloatArray = npt.NDArray[np.float32]


class Encoder:
    """Instruction-aware text encoder over any transformers backbone.

    Build one with :meth:`from_pretrained`. Queries get the model's instruction (KaLM models) or
    query prompt (e5); documents stay plain, except for symmetric tasks (see RECIPE.md).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: ModelConfig,
        *,
        name_or_path: str = "",
        source: Path | None = None,
    ) -> None:
        from kalm_rag.batching import FastTokenizer
        from kalm_rag.loading import effective_max_length

        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.name_or_path = name_or_path
        self.source_folder = source
        self._max_length = effective_max_length(config, model.config)
        self._fast_tokenizer = FastTokenizer(tokenizer, self._max_length)
        self._warned_truncation = False
        #: texts this encoder has cut to ``max_length`` tokens so far (warned once, counted always)
        self.truncated_texts = 0
        self._dim = int(model.config.hidden_size)
        #: an exported model (OpenVINO / ONNX Runtime) that replaces ``model`` for encoding
        self.runner: Any = None
        self.backend_choice: Any = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        num_threads: int | None = None,
        config: ModelConfig | None = None,
        backend: str = "auto",
        calibration_texts: Sequence[str] | None = None,
        guard: GuardPolicy | None = None,
        **overrides: Any,
    ) -> Encoder:
        """Load a model: ``None`` is the packaged all-MiniLM-L6-v2; also a folder (transformers or
        sentence-transformers layout), a built-in alias (``multilingual-e5-small``, ``kalm-v2``,
        ...) or a hub id. ``dtype=None`` picks bf16 on GPUs and AMX CPUs, float32 elsewhere.
        Keyword overrides change single config fields, e.g. ``max_length=256``.

        ``backend``: "auto" (default; ``$KALM_RAG_BACKEND`` overrides it) runs, on CPU, the fastest
        of OpenVINO int8 / bf16 / float32 (else ONNX Runtime) that passes the accuracy guard
        against float32, exported once and cached; "torch", "openvino" or "onnx" pick one.
        ``dtype="int8"`` is static int8 calibrated on ``calibration_texts`` (default: a bundled
        multilingual sample); ``guard`` sets the thresholds (default 0.99 top-10 agreement and
        0.99 min cosine). See :mod:`kalm_rag.backends`.
        """
        from kalm_rag.backends.load import attach, plan
        from kalm_rag.loading import load_backbone, load_tokenizer
        from kalm_rag.resolve import resolve_model
        from kalm_rag.runtime import configure_threads, pick_device, pick_dtype

        resolved = resolve_model(name_or_path)
        model_config = config or resolved.config
        if overrides:
            model_config = model_config.replace(**overrides)
        torch_device = pick_device(device)
        backend, export = plan(backend, dtype, torch_device)
        torch_dtype = pick_dtype("float32" if export else dtype, torch_device)
        configure_threads(num_threads)
        tokenizer = load_tokenizer(resolved.folder)
        model = load_backbone(resolved.folder, model_config, device=torch_device, dtype=torch_dtype)
        encoder = cls(model, tokenizer, model_config, name_or_path=resolved.name, source=resolved.folder)
        if export:
            attach(encoder, backend=backend, dtype=dtype, num_threads=num_threads,
                   calibration_texts=calibration_texts, guard=guard)  # fmt: skip
        return encoder

    # -- properties ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def backend(self) -> str:
        """What encodes: "torch", or the exported backend and precision, e.g. "openvino int8"."""
        return "torch" if self.runner is None else f"{self.runner.backend} {self.runner.precision}"

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self.model.parameters()).device
        return device

    def __repr__(self) -> str:
        return f"Encoder({self.name_or_path!r}, dim={self.dim}, pooling={self.config.pooling!r})"

    # -- encoding -----------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int = 32,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        show_progress: bool = False,
    ) -> FloatArray:
        """Embed ``texts`` (a string or a list) into a float32 array of shape (n, dim).

        ``prompt`` is a literal prefix put before every text. ``normalize`` defaults to the
        model's config; ``truncate_dim`` keeps the first dims (Matryoshka), then re-normalises.
        """
        out_dim = self._check_truncate_dim(truncate_dim)
        if isinstance(texts, Sequence) and not isinstance(texts, str) and len(texts) == 0:
            return np.zeros((0, out_dim), dtype=np.float32)
        items = validate_texts(texts)
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a string, got {type(prompt).__name__}")
        if prompt:
            check_unicode(prompt, "the prompt/instruction")
            items = [prompt + text for text in items]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        do_normalize = self.config.normalize if normalize is None else normalize
        return self._encode_prefixed(
            items,
            batch_size=batch_size,
            normalize=do_normalize,
            truncate_dim=truncate_dim,
            show_progress=show_progress,
        )

    def encode_query(
        self,
        texts: str | Sequence[str],
        *,
        instruction: str | None = None,
        task: str | TaskType | None = None,
        **kwargs: Any,
    ) -> FloatArray:
        """Embed queries with the model's instruction (or its query prompt)."""
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise InvalidInputError("instruction must be a non-empty string")
        prefix = self.config.query_prefix(instruction=instruction, task=task)
        return self.encode(texts, prompt=prefix, **kwargs)

    def encode_document(
        self,
        texts: str | Sequence[str],
        *,
        task: str | TaskType | None = None,
        instruction: str | None = None,
        **kwargs: Any,
    ) -> FloatArray:
        """Embed documents: plain (or the document prompt) for retrieval; symmetric tasks give
        documents the query side's prefix (the instruction, or e5's ``"query: "``)."""
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise InvalidInputError("instruction must be a non-empty string")
        prefix = self.config.document_prefix(task=task, instruction=instruction)
        return self.encode(texts, prompt=prefix, **kwargs)

    def similarity(self, a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
        """Pairwise similarity matrix (n_a, n_b): cosine or dot, as the model was trained."""
        left = _as_matrix(a, "a")
        right = _as_matrix(b, "b")
        if left.shape[1] != right.shape[1]:
            raise InvalidInputError(f"dimension mismatch: a has {left.shape[1]} dims, b has {right.shape[1]}")
        if self.config.similarity == "cosine":
            left = left / np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)
            right = right / np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)
        return np.asarray(left @ right.T, dtype=np.float32)

    # -- internals ----------------------------------------------------------------------------
    def _check_truncate_dim(self, truncate_dim: int | None) -> int:
        if truncate_dim is None:
            return self.dim
        if (
            isinstance(truncate_dim, bool)
            or not isinstance(truncate_dim, int)
            or not 1 <= truncate_dim <= self.dim
        ):
            raise InvalidInputError(
                f"truncate_dim must be an integer in [1, {self.dim}], got {truncate_dim!r}"
            )
        return truncate_dim

    def _encode_prefixed(
        self,
        texts: list[str],
        *,
        batch_size: int,
        normalize: bool,
        truncate_dim: int | None,
        show_progress: bool,
    ) -> FloatArray:
        import torch

        from kalm_rag.batching import CPU_TOKEN_BUDGET, length_sorted_batches, pad_batch
        from kalm_rag.pooling import pool, truncate_and_normalize

        token_ids, truncated = self._fast_tokenizer(texts)
        self.truncated_texts += truncated
        if truncated and not self._warned_truncation:
            self._warned_truncation = True
            warnings.warn(
                f"{truncated} text(s) are longer than max_length={self.max_length} tokens and were truncated",
                UserWarning,
                stacklevel=3,
            )
        device = self.device
        # a token budget only pays on CPU, where big batches fall out of cache; GPUs like big batches
        max_tokens = CPU_TOKEN_BUDGET if device.type == "cpu" else None
        batches = length_sorted_batches([len(ids) for ids in token_ids], batch_size, max_tokens=max_tokens)
        out = np.empty((len(texts), truncate_dim or self.dim), dtype=np.float32)
        pad_id = int(self.tokenizer.pad_token_id)
        progress = _progress(len(batches), show_progress)
        with torch.inference_mode():
            for batch in batches:
                input_ids, mask = pad_batch([token_ids[i] for i in batch], pad_id)
                input_ids, mask = input_ids.to(device), mask.to(device)
                # a batch without padding needs no mask, which lets SDPA take its fastest path
                needs_mask = bool((mask == 0).any()) or self.config.is_causal is False
                if self.runner is not None:
                    hidden = torch.from_numpy(self.runner(input_ids.numpy(), mask.numpy()))
                else:
                    hidden = self.model(
                        input_ids=input_ids, attention_mask=mask if needs_mask else None
                    ).last_hidden_state
                pooled = pool(hidden, mask, self.config.pooling)
                pooled = truncate_and_normalize(pooled, dim=truncate_dim, normalize=normalize)
                out[batch] = pooled.float().cpu().numpy()
                progress.update(1)
        progress.close()
        if not np.isfinite(out).all():
            raise InvalidInputError("the model produced NaN/inf embeddings (try dtype='float32')")
        return out

    # -- saving -------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a folder that kalm_rag and plain sentence-transformers both load (same vectors).

        ``path`` may be new, empty, or a folder kalm-rag saved; any other folder is refused
        unless ``overwrite=True``.
        """
        import json

        from kalm_rag._atomic import atomic_folder
        from kalm_rag.st_format import write_sentence_transformers_files

        target = Path(path)
        with atomic_folder(target, overwrite=overwrite, kind="encoder") as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            saved_config = self.config.replace(max_length=self.max_length)
            write_sentence_transformers_files(tmp, saved_config, self.dim)
            if self.runner is not None:  # openvino/ or onnx/, as sentence-transformers loads them
                from kalm_rag.backends.load import write_subfolder

                write_subfolder(self, tmp)
            (tmp / CONFIG_FILENAME).write_text(
                json.dumps(saved_config.to_dict(), indent=2) + "\n", encoding="utf-8"
            )
        return target


def _as_matrix(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidInputError(f"{name} must be a 1-D or 2-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name} contains NaN or inf values")
    return array


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encoding", unit="batch")


__all__ = ["Encoder", "FloatArray"]
