"""PyTorch DDP under ``torchrun`` (ARCHITECTURE.md "Scale beyond one machine"; the paper trains on
8 GPUs). With ``WORLD_SIZE > 1`` in the environment the process group is initialised (``nccl`` on
CUDA, ``gloo`` on CPU) from torchrun's ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``;
otherwise everything is a no-op for a single process."""

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
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Initialise the default process group when launched by torchrun with ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this PyTorch build")
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], info: DistInfo, device) -> dict[str, float]:
    """Mean of scalar metrics over ranks (identity for one process)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def gather_objects(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["DistInfo", "all_reduce_mean", "barrier", "cleanup", "gather_objects", "init_distributed", "resolve_device"]
