"""Training on several processes (torchrun): each process's rank, and means over all of them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Ranks:
    """This process's place among the training processes (torchrun sets the environment)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device
    if device.type == "cuda":  # one GPU per process, chosen before NCCL starts on it
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # NCCL reduces CUDA tensors only: the gradients; gloo the CPU ones (`reduce_means`)
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), world), device


def reduce_means(means: dict[str, float], count: int, ranks: Ranks) -> dict[str, float]:
    """Means over every rank's share, weighted by how many images each rank saw."""
    if ranks.world == 1:
        return means
    keys = sorted(means)
    totals = torch.tensor([means[k] * count for k in keys] + [count], dtype=torch.float64)
    dist.all_reduce(totals)
    return {k: (totals[i] / totals[-1]).item() for i, k in enumerate(keys)}


def cache_name(split: str, ranks: Ranks) -> str:
    """Each rank caches its own share, in its own file when on disk."""
    return split if ranks.world == 1 else f"{split}{ranks.rank}"
