"""Several processes: `torchrun --nproc_per_node N -m triform train ...`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; each process then joins one process group (gloo on
CPU, nccl on CUDA), trains its rows of every global batch, and only rank 0 logs and writes. The
model is wrapped in DistributedDataParallel, or sharded with FSDP (`train.strategy: fsdp`,
`fully_shard` per block, Zhao et al. 2023) for models that do not fit one device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from triform.errors import TriformError


@dataclass
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over every process (float64, so token counts stay exact)."""
        tensor = torch.tensor(values, dtype=torch.float64)
        if self.distributed:
            backend_device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
            tensor = tensor.to(backend_device)
            dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def any(self, flag: bool) -> bool:
        return self.sum([float(flag)])[0] > 0

    def broadcast(self, value):
        """`value` as rank 0 has it."""
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TriformError("train.device: cuda was asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def start(device_choice: str) -> Processes:
    """Join the process group torchrun describes in the environment, or run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(device=pick_device(device_choice))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world_size, local_rank, device)


def stop(processes: Processes) -> None:
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, processes: Processes, strategy: str, find_unused: bool = False) -> nn.Module:
    """The model for this run's processes; `find_unused`: a training module (train/problem.py) may
    leave parts of the model out of the loss (a saved output head its objective does not train)."""
    if not processes.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        stacks = [model.stack] if hasattr(model, "stack") else [model.encoder, model.decoder]
        for stack in stacks:
            for block in stack.blocks:
                fully_shard(block)
        fully_shard(model)
        return model
    device_ids = [processes.device.index] if processes.device.type == "cuda" else None
    # A model some of whose parameters get no gradient says so (tasks/embed.py: EmbeddingModel), as a
    # training module may (find_unused); DDP then looks for them after each backward instead of waiting.
    unused = find_unused or getattr(model, "has_unused_parameters", False)
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside a DDP or compile wrapper (FSDP shards in place)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
