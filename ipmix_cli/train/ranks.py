"""The processes of a run: DDP from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK; gloo
on CPU, NCCL on GPU), sums and gathers across them, and the threads each may use."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ipmix_cli.train.device import resolve_device


def setup_distributed(device: str):
    """(rank, world_size, torch.device) from the torchrun environment; initialises the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return rank, world, dev


def sum_across_ranks(values: torch.Tensor) -> list[float]:
    """`values` summed over every process (in place), as a list."""
    if dist.is_initialized():
        dist.all_reduce(values)
    return values.tolist()


def gather(obj, world: int) -> list:
    """Every process's `obj`, in rank order."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def choose_threads(requested: int | None) -> tuple[int, str]:
    """(intra-op threads, why): the CPUs this process may run on divided by the processes of this
    machine, so that local ranks do not oversubscribe the cores; `requested` overrides it."""
    if requested:
        return int(requested), "--threads"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, cpus // local), f"{cpus} CPUs / {local} local process{'es' if local > 1 else ''}"
