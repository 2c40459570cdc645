"""Gradient caching (Gao et al., 2021, "GradCache"): a large contrastive batch in small memory.

A contrastive loss couples every embedding of the batch, so the batch cannot simply be split
into accumulation steps. GradCache splits the *encoder* work instead:

1. embed every chunk without autograd (activations are freed at once), remembering the RNG
   state before each chunk;
2. compute the loss on the full batch of detached embeddings and backpropagate it to them only,
   caching d loss / d embedding;
3. re-run each chunk with autograd, replaying its RNG state so dropout draws the same masks,
   and backpropagate the cached embedding gradients into the parameters.

Parameter gradients equal those of the plain (unchunked) computation; peak activation memory is
that of one chunk. The cost is one extra forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeAlias

import torch

from kalm_rag.errors import InvalidInputError

EncoderInput: TypeAlias = torch.Tensor | Mapping[str, torch.Tensor]


def split_batch(batch: EncoderInput, chunk_size: int) -> list[EncoderInput]:
    """Split a tensor, or a mapping of tensors (a tokenizer's output), into row chunks."""
    if chunk_size <= 0:
        raise InvalidInputError(f"chunk_size must be positive, got {chunk_size}")
    if isinstance(batch, torch.Tensor):
        return list(torch.split(batch, chunk_size, dim=0))
    if not batch:
        raise InvalidInputError("cannot split an empty mapping of encoder inputs")
    for name, value in batch.items():
        if not isinstance(value, torch.Tensor):
            raise InvalidInputError(f"encoder input {name!r} must be a tensor, got {type(value).__name__}")
    rows = {name: value.shape[0] for name, value in batch.items()}
    if len(set(rows.values())) != 1:
        raise InvalidInputError(f"encoder inputs disagree on the number of rows: {rows}")
    pieces = {name: torch.split(value, chunk_size, dim=0) for name, value in batch.items()}
    count = len(next(iter(pieces.values())))
    return [{name: parts[i] for name, parts in pieces.items()} for i in range(count)]


class RngSnapshot:
    """The CPU and CUDA RNG states at one moment, replayable inside a forked RNG scope."""

    def __init__(self, devices: Sequence[torch.device]) -> None:
        self.cpu_state = torch.get_rng_state()
        self.cuda_indices = sorted({d.index or 0 for d in devices if d.type == "cuda"})
        self.cuda_states = [torch.cuda.get_rng_state(i) for i in self.cuda_indices]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body with the saved states; the outer RNG streams are left as they were."""
        with torch.random.fork_rng(devices=self.cuda_indices):
            torch.set_rng_state(self.cpu_state)
            for index, state in zip(self.cuda_indices, self.cuda_states, strict=True):
                torch.cuda.set_rng_state(state, index)
            yield


def _devices(chunk: EncoderInput) -> list[torch.device]:
    tensors = [chunk] if isinstance(chunk, torch.Tensor) else list(chunk.values())
    return [t.device for t in tensors]


def gradcache_backward(
    embed: Callable[[EncoderInput], torch.Tensor],
    batches: Sequence[EncoderInput],
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    *,
    chunk_size: int,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
) -> torch.Tensor:
    """Backpropagate ``loss_fn`` over large ``batches`` chunk by chunk; return the loss, detached.

    ``batches`` holds one encoder input per role (e.g. queries, then positives and negatives
    flattened); ``embed`` maps an input chunk to embeddings (rows, d); ``loss_fn`` receives the
    full embeddings of every role, in order, and returns a scalar. Gradients accumulate into the
    parameters' ``.grad`` exactly as ``loss.backward()`` on the unchunked batch would.

    ``backward`` is applied to the loss in step 2 (pass ``accelerator.backward`` so loss scaling
    and gradient-accumulation division happen once, there); it defaults to ``torch.autograd.backward``.
    ``no_sync`` (e.g. ``lambda: model.no_sync()`` under DDP) wraps every chunk backward except the
    last, so gradients are all-reduced once per step.
    """
    chunked = [split_batch(batch, chunk_size) for batch in batches]
    snapshots: list[list[RngSnapshot]] = []
    detached: list[torch.Tensor] = []
    with torch.no_grad():
        for chunks in chunked:
            role_snapshots = []
            role_embeddings = []
            for chunk in chunks:
                role_snapshots.append(RngSnapshot(_devices(chunk)))
                role_embeddings.append(embed(chunk))
            snapshots.append(role_snapshots)
            detached.append(torch.cat(role_embeddings, dim=0))
    leaves = [e.detach().requires_grad_(True) for e in detached]
    loss = loss_fn(leaves)
    (backward or torch.autograd.backward)(loss)
    cached = [_gradient_of(leaf) for leaf in leaves]

    jobs = [
        (chunk, snapshot, grad)
        for chunks, role_snapshots, role_grad in zip(chunked, snapshots, cached, strict=True)
        for chunk, snapshot, grad in zip(
            chunks, role_snapshots, torch.split(role_grad, [_rows(c) for c in chunks]), strict=True
        )
    ]
    for position, (chunk, snapshot, grad) in enumerate(jobs):
        is_last = position == len(jobs) - 1
        sync_scope = contextlib.nullcontext() if is_last or no_sync is None else no_sync()
        with sync_scope, snapshot.replay():
            embeddings = embed(chunk)
            torch.autograd.backward(embeddings, grad_tensors=grad.to(embeddings.dtype))
    return loss.detach()


def _gradient_of(leaf: torch.Tensor) -> torch.Tensor:
    # A role the loss ignores gets no gradient; zeros keep the replay loop uniform.
    return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)


def _rows(chunk: EncoderInput) -> int:
    if isinstance(chunk, torch.Tensor):
        return chunk.shape[0]
    return next(iter(chunk.values())).shape[0]
