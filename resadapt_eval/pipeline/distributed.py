"""Data-parallel runs under `torchrun` (or `accelerate launch`): which process this is, which
samples are its own, and waiting for the others.

torchrun starts one process per GPU (or per CPU slot) and tells each its RANK, WORLD_SIZE and
LOCAL_RANK through the environment. Each rank evaluates every WORLD_SIZE-th sample of the task's
order, writes its own shard file, and rank 0 merges the shards once all ranks are past the
barrier. Without those variables this is a world of one, and nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

T = TypeVar("T")

# Ranks meet at a barrier after each configuration; the slowest shard decides the wait.
BARRIER_TIMEOUT = timedelta(hours=float(os.environ.get("RESADAPT_DIST_TIMEOUT_H", "6")))


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every size-th one, starting at its rank (deterministic, balanced)."""
        return list(items[self.rank::self.size])

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def device(self, requested: str | None) -> str | None:
        """One GPU per rank (by LOCAL_RANK) when there are GPUs and no device was asked for."""
        if requested is not None or self.size == 1:
            return requested
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return f"cuda:{self.local_rank % n}" if n else None  # more ranks than GPUs: they share


def current_world() -> World:
    """The world this process belongs to; joins the process group on first call under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        # Ranks exchange no tensors, only barriers: gloo (TCP) does that on any machine, across nodes,
        # and with several ranks sharing one GPU, where NCCL refuses.
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """Rank 0 (or no torchrun at all): the process that prints and merges."""
    return int(os.environ.get("RANK", "0")) == 0
