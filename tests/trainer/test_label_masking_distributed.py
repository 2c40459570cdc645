"""Same-class masking across two real gloo processes: class ids made by each process's collator
mean the same class after the all-gather, and every candidate (positives and hard negatives of
every query) carries its class. The mask is checked against a hand-written matrix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from kalm_trainer.collate import candidate_labels, choose_group
from kalm_trainer.data.schema import TaskType, TrainingExample
from kalm_trainer.losses import LossConfig, gather_with_local_grad, kalm_contrastive_loss
from kalm_trainer.losses.masks import same_label_mask, split_labels


def clustering(query: str, label: str, positive: str, negative: str, negative_label: str) -> TrainingExample:
    return TrainingExample(
        query,
        (positive,),
        (negative,),
        task="news",
        task_type=TaskType.CLUSTERING,
        label=label,
        negative_labels=(negative_label,),
    )


# rank 0 holds examples 0-1, rank 1 holds 2-3; one hard negative each. Numbering classes per
# process would give rank 0's weather and rank 1's sports the same id.
EXAMPLES = [
    clustering("storm warning", "weather", "sunny spells", "the cup final", "sports"),
    clustering("goal!", "sports", "a late winner", "rain tomorrow", "weather"),
    clustering("match report", "sports", "the striker scored", "bake the bread", "cooking"),
    TrainingExample("how to install", ("apt install foo",), ("rm -rf",), task="docs"),  # unlabelled
]
SLICES = (slice(0, 2), slice(2, 4))
# candidates after the gather: [P0, P1, P2, P3, N0, N1, N2, N3]; True = masked false negative
EXPECTED_MASK = torch.tensor(
    [
        # P0     P1     P2     P3     N0     N1     N2     N3
        [False, False, False, False, False, True, False, False],  # q0 weather: N1 (q1's negative)
        [False, False, True, False, True, False, False, False],  # q1 sports: P2, N0
        [False, True, False, False, True, False, False, False],  # q2 sports: P1, N0
        [False, False, False, False, False, False, False, False],  # q3 unlabelled: nothing
    ]
)
CONFIG = LossConfig(temperature=0.05, gamma=0.0, mix_k=0, matryoshka_dims=(), matryoshka_weights=())


def embeddings() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(4, 1, 8, generator=g)


def local_labels(rank: int) -> torch.Tensor:
    examples = EXAMPLES[SLICES[rank]]
    return candidate_labels(examples, [choose_group(ex, 1, seed=0) for ex in examples])


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        labels = local_labels(rank)  # class ids computed in this process only
        gathered = gather_with_local_grad(labels)
        mask = same_label_mask(*split_labels(gathered, 4, 1))
        q, p, n = (t[SLICES[rank]] for t in embeddings())
        config = LossConfig(**{**CONFIG.__dict__, "gather_across_processes": True})
        loss = kalm_contrastive_loss(q, p, n, labels=labels, config=config)
        torch.save({"mask": mask, "loss": loss.detach()}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def reference_loss() -> torch.Tensor:
    """InfoNCE over the whole batch with EXPECTED_MASK's candidates removed, by hand."""
    q, p, n = embeddings()
    candidates = F.normalize(torch.cat([p, n.reshape(-1, 8)]), dim=-1)
    logits = F.normalize(q, dim=-1) @ candidates.T / CONFIG.temperature
    logits = logits.masked_fill(EXPECTED_MASK, float("-inf"))
    return F.cross_entropy(logits, torch.arange(4))


def test_single_process_mask_is_the_expected_matrix() -> None:
    labels = torch.cat([local_labels(0), local_labels(1)])
    assert torch.equal(same_label_mask(*split_labels(labels, 4, 1)), EXPECTED_MASK)
    q, p, n = embeddings()
    torch.testing.assert_close(kalm_contrastive_loss(q, p, n, labels=labels, config=CONFIG), reference_loss())


@pytest.mark.slow  # two spawned processes each import torch: ~10 s on 2 cores
def test_two_processes_mask_the_same_classes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(result["mask"], EXPECTED_MASK), f"rank {rank}"
        # each rank scores the global batch; its loss is x world size (see losses.distributed)
        torch.testing.assert_close(result["loss"], 2 * reference_loss())
