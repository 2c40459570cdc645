"""EmbeddingModel: embeds as the SDK does, bidirectional decoders, LoRA merge, SDK-format saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kalm_trainer.collate import EmbeddingCollator
from kalm_trainer.data.schema import TrainingExample
from kalm_trainer.model import ADAPTER_FOLDER, EmbeddingModel, LoraSettings
from safetensors.torch import load_file

from kalm_rag import Encoder
from kalm_rag.config import ModelConfig
from kalm_rag.errors import ConfigError
from kalm_rag.instructions import KALM_TEMPLATE
from tests.trainer.test_trainer_support import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

KALM = ModelConfig(pooling="mean", is_causal=False, instruction_template=KALM_TEMPLATE, max_length=64)
INSTRUCTION = "Given a query, retrieve documents that answer the query"
QUERIES = ["how to install a python package", "fast search index", "the linux kernel driver"]
DOCS = ["a tool to install python packages from the command line", "an open source search library"]


def embed_queries(model: EmbeddingModel, queries: list[str]) -> np.ndarray:
    examples = [TrainingExample(q, ("x",), instruction=INSTRUCTION) for q in queries]
    batch = EmbeddingCollator(model.tokenizer, model.model_config, query_max_length=64)(examples)
    with torch.no_grad():
        out = model({"query": batch["query"]})["query"]
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_embeds_exactly_like_the_sdk_encoder(tiny_qwen2_dir: Path) -> None:
    model = EmbeddingModel.from_pretrained(tiny_qwen2_dir, config=KALM).eval()
    encoder = Encoder.from_pretrained(tiny_qwen2_dir, config=KALM, dtype="float32")
    expected = encoder.encode_query(QUERIES, instruction=INSTRUCTION)
    np.testing.assert_allclose(embed_queries(model, QUERIES), expected, atol=1e-5)


def first_token_state(folder: Path, config: ModelConfig, last_token: int) -> torch.Tensor:
    model = EmbeddingModel.from_pretrained(folder, config=config).eval()
    ids = torch.tensor([[5, 6, 7, last_token]])
    with torch.no_grad():
        return model.backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, 0]


def test_is_causal_false_makes_the_decoder_bidirectional(tiny_qwen2_dir: Path) -> None:
    causal = ModelConfig(is_causal=None)
    assert torch.equal(
        first_token_state(tiny_qwen2_dir, causal, 8), first_token_state(tiny_qwen2_dir, causal, 9)
    )
    bidi = ModelConfig(is_causal=False)
    # the first token now sees the last one
    assert not torch.allclose(
        first_token_state(tiny_qwen2_dir, bidi, 8), first_token_state(tiny_qwen2_dir, bidi, 9)
    )


def test_length_sorted_chunks_change_nothing(tiny_qwen2_dir: Path) -> None:
    model = EmbeddingModel.from_pretrained(tiny_qwen2_dir, config=KALM).eval()
    collator = EmbeddingCollator(model.tokenizer, model.model_config, passage_max_length=64)
    texts = [" ".join(["search index"] * n) for n in (1, 9, 3, 14, 2, 6, 11)]
    batch = collator([TrainingExample("q", (t,)) for t in texts])["passage"]
    whole = model.embed(batch["input_ids"], batch["attention_mask"])
    model.length_chunk = 3
    chunked = model.embed(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_saved_folder_gives_the_same_vectors_in_kalm_rag_and_sentence_transformers(
    tiny_qwen2_dir: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    model = EmbeddingModel.from_pretrained(tiny_qwen2_dir, config=KALM).eval()
    folder = model.save(tmp_path / "saved")
    assert '"is_causal": false' in (folder / "config.json").read_text()
    expected = embed_queries(model, QUERIES)
    encoder = Encoder.from_pretrained(folder, dtype="float32")
    assert encoder.config.instruction_template == KALM_TEMPLATE
    np.testing.assert_allclose(encoder.encode_query(QUERIES, instruction=INSTRUCTION), expected, atol=1e-5)
    st = SentenceTransformer(str(folder), device="cpu")
    st_vectors = st.encode(QUERIES, prompt_name="retrieval", normalize_embeddings=True)
    np.testing.assert_allclose(st_vectors, expected, atol=1e-5)
    np.testing.assert_allclose(st.encode(DOCS), encoder.encode_document(DOCS), atol=1e-5)


def test_lora_is_merged_on_save_and_resumable(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    lora = LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0)
    model = EmbeddingModel.from_pretrained(tiny_qwen2_dir, config=KALM, lora=lora)
    assert model.is_lora
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # lora_B starts at zero; give the adapter an effect to merge
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    model.eval()
    expected = embed_queries(model, QUERIES)
    folder = model.save(tmp_path / "lora")
    weights = load_file(folder / "model.safetensors")
    assert not any("lora" in key for key in weights)
    assert (folder / ADAPTER_FOLDER / "adapter_model.safetensors").is_file()
    merged = Encoder.from_pretrained(folder, dtype="float32")
    np.testing.assert_allclose(merged.encode_query(QUERIES, instruction=INSTRUCTION), expected, atol=1e-4)
    assert model.is_lora, "saving must not merge the adapter of the model being trained"
    fresh = EmbeddingModel.from_pretrained(tiny_qwen2_dir, config=KALM, lora=lora).eval()
    fresh.load_weights(folder)
    np.testing.assert_allclose(embed_queries(fresh, QUERIES), expected, atol=1e-5)


def test_load_weights_restores_a_full_checkpoint(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    model = EmbeddingModel.from_pretrained(tiny_qwen2_dir, config=KALM).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    folder = model.save(tmp_path / "ckpt")
    fresh = EmbeddingModel.from_pretrained(tiny_qwen2_dir, config=KALM).eval()
    fresh.load_weights(folder)
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_freeze_embeddings(tiny_bert_dir: Path) -> None:
    model = EmbeddingModel.from_pretrained(tiny_bert_dir)
    table = model.base_model.get_input_embeddings().weight
    assert model.freeze_embeddings() == table.numel()
    assert not table.requires_grad
    assert any(p.requires_grad for p in model.parameters())


def test_freeze_lower_layers(tiny_bert_dir: Path, tiny_qwen2_dir: Path) -> None:
    bert = EmbeddingModel.from_pretrained(tiny_bert_dir)
    bert.freeze_lower_layers(1)
    assert not any(p.requires_grad for p in bert.base_model.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in bert.base_model.encoder.layer[1].parameters())
    assert not bert.base_model.get_input_embeddings().weight.requires_grad
    qwen = EmbeddingModel.from_pretrained(tiny_qwen2_dir)
    qwen.freeze_lower_layers(2)
    assert not any(p.requires_grad for p in qwen.base_model.layers.parameters())
    with pytest.raises(ConfigError, match="cannot freeze 3 layers: the model has 2"):
        qwen.freeze_lower_layers(3)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_qwen2_dir: Path) -> None:
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    grads = []
    for checkpointing in (False, True):
        model = EmbeddingModel.from_pretrained(
            tiny_qwen2_dir, config=KALM, gradient_checkpointing=checkpointing
        )
        model.embed(ids, mask).pow(2).sum().backward()
        grads.append(model.base_model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
