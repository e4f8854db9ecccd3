"""Data-parallel training under torchrun: one process per device, gloo on CPU, nccl on GPU.

Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def place() -> Distributed:
    """This process's place: from the process group once joined, else from torchrun's
    environment (RANK, WORLD_SIZE, LOCAL_RANK), else alone."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ.get("RANK", "0")), world, local_rank)


def is_main_process() -> bool:
    """Whether this process writes files and prints (rank 0 of a torchrun job, or alone)."""
    return place().main


def setup(device: torch.device) -> Distributed:
    """Join the process group torchrun describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed()
    if not dist.is_initialized():
        # The main process alone computes validation and stage 2's feature cache while the
        # others wait at a barrier: allow for that (the default timeout is 30 minutes).
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=3)
        )
    return place()


def sum_all(value: torch.Tensor, group: Distributed) -> torch.Tensor:
    """Sum of ``value`` over all processes (``value`` itself when alone)."""
    if not group.active:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def barrier(group: Distributed) -> None:
    if group.active:
        dist.barrier()


def teardown(group: Distributed) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()
