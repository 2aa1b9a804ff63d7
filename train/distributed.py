"""One process per GPU (or one CPU process), as torchrun starts them.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous address) in each process's environment;
without them we are a single process. NCCL is the collective backend on GPUs, gloo on CPUs (which is how
the DDP tests run 2 processes on a laptop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class DeviceUnavailableError(RuntimeError):
    """The recipe asks for a device this machine does not have (said in one line, before any work)."""


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"


def setup(device_pref: str = "auto") -> DistEnv:
    """Pick the device and, under torchrun, join the process group."""
    want_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "train.device = 'cuda' but torch sees no CUDA device (no GPU, or a CPU-only torch build); "
            "use train.device=auto or cpu (make pretrain SET=\"train.device=cpu\")")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(device="cuda:0" if want_cuda else "cpu")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown(env: DistEnv) -> None:
    if env.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum over ranks (in place, returned). gloo has no AVG, so callers divide themselves."""
    if env.is_distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj, env: DistEnv) -> list:
    if not env.is_distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, env: DistEnv):
    """Rank 0's `obj` in every process: decisions that rank 0 takes alone (it alone reads the run
    directory under the stage lock, and on several nodes only its disk holds that directory)."""
    if not env.is_distributed:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.is_distributed:
        dist.barrier()
