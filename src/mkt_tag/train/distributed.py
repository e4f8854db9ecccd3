"""Data-parallel training under torchrun: one process per device, gloo on CPU, nccl on GPU.

Every collective runs on the process's training device: NCCL reduces CUDA tensors only, gloo
CPU tensors, so a value made on the host (a validation mAP) is moved there first. One backend
per run (not ``"cpu:gloo,cuda:nccl"``): a second communicator would need its own network
setup on every node, for a few scalars per epoch that cost nothing to move.

Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op. Under torchrun
a process joins the group even when alone (``--nproc_per_node 1``), so that one GPU runs the
very code paths that several do.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mkt_tag.errors import MktTagError


@dataclass
class Distributed:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # collectives
    joined: bool = False  # in a process group (under torchrun, also when alone)
    owner: bool = False  # joined it here (and leaves it at the end)

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1 or self.joined


def place(device: torch.device | None = None) -> Distributed:
    """This process's place: from the process group once joined, else from torchrun's
    environment (RANK, WORLD_SIZE, LOCAL_RANK), else alone."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = device or torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, device, True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=device)
    return Distributed(int(os.environ.get("RANK", "0")), world, local_rank, device)


def is_main_process() -> bool:
    """Whether this process writes files and prints (rank 0 of a torchrun job, or alone)."""
    return place().main


def launched() -> bool:
    """Whether torchrun (or a launcher setting WORLD_SIZE > 1) started this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > 1 or (world == 1 and "TORCHELASTIC_RUN_ID" in os.environ)


def setup(device: torch.device) -> Distributed:
    """Join the process group torchrun describes in the environment, if any (or the one the
    caller already joined). ``device`` is where training runs; under torchrun on GPUs it
    becomes this process's GPU (``cuda:LOCAL_RANK``), where its collectives run too.

    Raises:
        MktTagError: several processes asked for a device no backend here reduces on (mps).
    """
    if not (dist.is_available() and (dist.is_initialized() or launched())):
        return Distributed(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise MktTagError(
            f"torchrun trains on CUDA GPUs (nccl) or CPUs (gloo), not on {device.type}: "
            "use --device cuda or --device cpu"
        )
    if dist.is_initialized():
        return place(device)
    # The main process alone computes validation and stage 2's feature cache while the
    # others wait at a barrier: allow for that (the default timeout is 30 minutes).
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        timeout=timedelta(hours=3),
        device_id=device if device.type == "cuda" else None,  # barriers know their GPU
    )
    group = place(device)
    group.owner = True
    return group


def parallel(net: nn.Module, group: Distributed) -> nn.Module:
    """``net`` on the group's device; wrapped for data-parallel training in a group."""
    net = net.to(group.device)
    if not group.active:
        return net
    ids = [group.device.index or 0] if group.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def no_sync(net: nn.Module, last_micro: bool) -> AbstractContextManager[Any]:
    """DDP exchanges gradients at the last micro-batch of a step only."""
    if isinstance(net, nn.parallel.DistributedDataParallel) and not last_micro:
        return net.no_sync()
    return nullcontext()


def sum_all(value: torch.Tensor, group: Distributed) -> torch.Tensor:
    """Sum of ``value`` over all processes, on ``group.device`` (``value`` itself when alone)."""
    if not group.active:
        return value
    total = value.detach().to(group.device, copy=True)
    dist.all_reduce(total)
    return total


def barrier(group: Distributed) -> None:
    if not group.active:
        return
    if group.device.type == "cuda":
        dist.barrier(device_ids=[group.device.index or 0])
    else:
        dist.barrier()


def teardown(group: Distributed) -> None:
    """Leave the process group, if it was joined by ``setup``."""
    if group.owner and dist.is_initialized():
        dist.destroy_process_group()
