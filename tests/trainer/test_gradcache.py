"""GradCache gives the parameter gradients of the plain loss on a tiny random BERT encoder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from kalm_trainer.gradcache import EncoderInput, gradcache_backward, split_batch
from kalm_trainer.losses import LossConfig, kalm_contrastive_loss
from transformers import BertConfig, BertModel

from kalm_rag.errors import InvalidInputError
from kalm_rag.pooling import pool

BATCH, NEGATIVES, TOKENS = 6, 2, 8
LOSS = LossConfig(
    temperature=0.05, gamma=0.5, mix_k=2, matryoshka_dims=(16, 8), matryoshka_weights=(1.0, 0.3)
)


def tiny_bert(dropout: float) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertModel(config).train()


def tokens(rows: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, TOKENS + 1, (rows,), generator=g)
    mask = (torch.arange(TOKENS)[None, :] < lengths[:, None]).long()
    return {"input_ids": torch.randint(1, 64, (rows, TOKENS), generator=g) * mask, "attention_mask": mask}


def roles(device: str = "cpu") -> list[EncoderInput]:
    batches = [tokens(BATCH, 1), tokens(BATCH * (1 + NEGATIVES), 2)]
    return [{name: value.to(device) for name, value in batch.items()} for batch in batches]


def make_embed(model: BertModel) -> object:
    def embed(inputs: EncoderInput) -> torch.Tensor:
        assert not isinstance(inputs, torch.Tensor)
        return pool(model(**inputs).last_hidden_state, inputs["attention_mask"], "mean")

    return embed


def loss_fn(embeddings: list[torch.Tensor]) -> torch.Tensor:
    queries, passages = embeddings
    negatives = passages[BATCH:].reshape(BATCH, NEGATIVES, -1)
    return kalm_contrastive_loss(
        queries, passages[:BATCH], negatives, config=LOSS, generator=torch.Generator().manual_seed(5)
    )


def grads(model: BertModel) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def plain_step(
    model: BertModel, chunk_size: int | None, device: str = "cpu"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss and gradients with autograd through every chunk at once (the reference)."""
    model.zero_grad()
    embed = make_embed(model)
    embeddings = [
        torch.cat([embed(c) for c in split_batch(batch, chunk_size)]) if chunk_size else embed(batch)  # type: ignore[operator]
        for batch in roles(device)
    ]
    loss = loss_fn(embeddings)
    loss.backward()
    return loss.detach(), grads(model)


def cached_step(
    model: BertModel, chunk_size: int, **kwargs: object
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = gradcache_backward(make_embed(model), roles(), loss_fn, chunk_size=chunk_size, **kwargs)  # type: ignore[arg-type]
    return loss, grads(model)


def assert_same_grads(left: list[torch.Tensor], right: list[torch.Tensor]) -> None:
    for a, b in zip(left, right, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradients_match_the_plain_loss_without_dropout() -> None:
    model = tiny_bert(dropout=0.0)
    loss, reference = plain_step(model, chunk_size=None)
    assert any(g.abs().sum() > 0 for g in reference)
    cached_loss, cached = cached_step(model, chunk_size=4)
    torch.testing.assert_close(cached_loss, loss, rtol=1e-5, atol=1e-6)
    assert_same_grads(cached, reference)


def test_dropout_masks_are_replayed() -> None:
    model = tiny_bert(dropout=0.2)
    torch.manual_seed(123)
    _, reference = plain_step(model, chunk_size=4)
    torch.manual_seed(123)
    _, cached = cached_step(model, chunk_size=4)
    assert_same_grads(cached, reference)
    # the comparison is sensitive to the masks: other dropout draws give other gradients
    torch.manual_seed(124)
    _, other = plain_step(model, chunk_size=4)
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(other, reference, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dropout_masks_are_replayed_on_cuda() -> None:
    model = tiny_bert(dropout=0.2).cuda()
    torch.manual_seed(123)
    _, reference = plain_step(model, chunk_size=4, device="cuda")
    torch.manual_seed(123)
    _, cached = cached_step(model, chunk_size=4, device="cuda")
    assert_same_grads(cached, reference)


def test_backward_hook_runs_once_and_no_sync_wraps_all_but_the_last_chunk() -> None:
    model = tiny_bert(dropout=0.0)
    calls = {"backward": 0, "no_sync": 0}

    def backward(loss: torch.Tensor) -> None:
        calls["backward"] += 1
        loss.backward()

    @contextlib.contextmanager
    def no_sync() -> Iterator[None]:
        calls["no_sync"] += 1
        yield

    _, reference = plain_step(model, chunk_size=None)
    _, cached = cached_step(model, chunk_size=4, backward=backward, no_sync=no_sync)
    assert_same_grads(cached, reference)
    chunks = -(-BATCH // 4) + -(-BATCH * (1 + NEGATIVES) // 4)
    assert calls == {"backward": 1, "no_sync": chunks - 1}


def test_split_batch_checks_its_input() -> None:
    assert [c.shape[0] for c in split_batch(torch.zeros(5, 2), 2)] == [2, 2, 1]  # type: ignore[union-attr]
    with pytest.raises(InvalidInputError, match="chunk_size"):
        split_batch(torch.zeros(5, 2), 0)
    with pytest.raises(InvalidInputError, match="disagree"):
        split_batch({"input_ids": torch.zeros(5, 2), "attention_mask": torch.zeros(4, 2)}, 2)
