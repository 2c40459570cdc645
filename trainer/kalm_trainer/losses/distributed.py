"""All-gather across processes in which the local shard keeps its gradient.

RECIPE.md, "Loss": each query is scored against every passage of the all-gathered batch.
``torch.distributed.all_gather`` returns copies without autograd history; putting the local
tensor back in its slot restores the gradient path for this process's embeddings. When queries
and passages are both gathered and the loss is the mean over the global batch, every process
thus computes the full gradient of the global loss with respect to its own embeddings (other
processes' embeddings act as constants); DDP then averages across processes, which divides by
the world size, so callers multiply the loss by ``world_size()`` to undo that (as tevatron does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, in rank order.

    The local slice is ``tensor`` itself (gradient kept); other slices are constants. Processes
    may hold different numbers of rows (e.g. a smaller last batch): sizes are exchanged first and
    shards padded to the largest. A no-op without an initialised multi-process group.
    """
    if not is_distributed():
        return tensor
    size = dist.get_world_size()
    local_rows = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    all_rows = [torch.zeros_like(local_rows) for _ in range(size)]
    dist.all_gather(all_rows, local_rows)
    rows = [int(r.item()) for r in all_rows]
    padded = tensor.detach().contiguous()
    if padded.shape[0] < max(rows):
        filler = padded.new_zeros((max(rows) - padded.shape[0], *padded.shape[1:]))
        padded = torch.cat([padded, filler])
    shards = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(shards, padded)
    pieces = [shard[:n] for shard, n in zip(shards, rows, strict=True)]
    pieces[dist.get_rank()] = tensor
    return torch.cat(pieces, dim=0)
