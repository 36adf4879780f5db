"""torchrun support: one process per GPU (or CPU process with gloo), data split by rank."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def shard(items: list, info: DistInfo) -> list:
    """Each rank takes every world_size-th item; the list is first padded by repetition so
    every rank gets the same number, since DDP hangs when ranks take different step counts."""
    if not info.enabled or not items:
        return items
    n = -(-len(items) // info.world_size) * info.world_size
    padded = [items[i % len(items)] for i in range(n)]
    return padded[info.rank::info.world_size]


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0 decides (e.g. time is up); everyone follows, so no rank hangs in a collective."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, src=0)
    return bool(t.item())


def cleanup(info: DistInfo) -> None:
    """Leave the process group together: without the barrier a rank that finished first tore
    its gloo connections down while rank 0 was still validating and writing, and once in a
    CI run (of many) it aborted there ("terminate called without an active exception")."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
