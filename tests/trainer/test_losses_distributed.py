"""Cross-process gather: two real gloo processes against a single-process reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from kalm_trainer.losses import LossConfig, gather_with_local_grad, kalm_contrastive_loss

# Uneven shards on purpose: a last batch that does not divide evenly must still gather.
SHARDS = (slice(0, 3), slice(3, 5))
CONFIG = LossConfig(
    temperature=0.05, gamma=0.5, mix_k=2, mix_pool=4, matryoshka_dims=(8, 4), matryoshka_weights=(1.0, 0.5)
)


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[0, -1, -1], [1, -1, -1], [0, -1, 1], [2, -1, -1], [-1, -1, -1]])
    return (
        torch.randn(5, 8, generator=g),
        torch.randn(5, 8, generator=g),
        torch.randn(5, 2, 8, generator=g),
        labels,
    )


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        q, p, n, labels = global_batch()
        rows = SHARDS[rank]
        leaves = [t[rows].clone().requires_grad_(True) for t in (q, p, n)]
        config = LossConfig(**{**CONFIG.__dict__, "gather_across_processes": True})
        loss = kalm_contrastive_loss(
            *leaves, labels=labels[rows], config=config, generator=torch.Generator().manual_seed(0)
        )
        loss.backward()
        gathered = gather_with_local_grad(leaves[0])
        torch.save(
            {"loss": loss.detach(), "grads": [t.grad for t in leaves], "gathered": gathered.detach()},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_gather_is_a_no_op_without_a_process_group() -> None:
    tensor = torch.randn(3, 2)
    assert gather_with_local_grad(tensor) is tensor


@pytest.mark.slow  # two spawned processes each import torch: ~8 s on 2 cores
def test_two_processes_get_the_gradient_of_the_global_loss(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    q, p, n, labels = global_batch()
    leaves = [t.clone().requires_grad_(True) for t in (q, p, n)]
    reference = kalm_contrastive_loss(
        *leaves, labels=labels, config=CONFIG, generator=torch.Generator().manual_seed(0)
    )
    reference.backward()
    for rank, rows in enumerate(SHARDS):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["gathered"], q)
        # every rank computes the global loss; x world size undoes DDP's gradient averaging
        torch.testing.assert_close(result["loss"], 2 * reference.detach())
        for grad, leaf in zip(result["grads"], leaves, strict=True):
            assert leaf.grad is not None
            torch.testing.assert_close(grad, 2 * leaf.grad[rows], rtol=1e-4, atol=1e-5)
