"""Data-parallel training over several processes launched by ``torchrun`` (Dassl-free).

Each rank trains on a disjoint slice of every global batch; after the backward pass the gradients
of what is trained are averaged over the ranks (one all-reduce), so every rank takes the step one
process would take on the whole global batch. Only rank 0 writes (logs, checkpoints, caches,
markers); what all ranks need from disk (few-shot split, embedding cache) rank 0 makes first.

The gradients are reduced explicitly rather than through ``DistributedDataParallel``'s wrapper:
the trainers call their models through methods other than ``forward`` (LOREAL's training step,
cached embeddings), which DDP's hooks do not see; the arithmetic is DDP's (mean over ranks).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import torch
import torch.distributed as dist

from .errors import ConfigError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Rank 0 alone evaluates (and may build a cache) while the others wait at the next collective.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Launch:
    """This process's place in a ``torchrun`` launch."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch ``torchrun`` describes in the environment; ``None`` for a plain single process."""
    environ = os.environ if environ is None else environ
    present = [k for k in TORCHRUN_ENV if k in environ]
    if not present:
        return None
    missing = [k for k in TORCHRUN_ENV if k not in environ]
    if missing:
        raise ConfigError(f"{', '.join(present)} set but {', '.join(missing)} missing: launch several processes with "
                          f"`torchrun --nproc_per_node N train.py ...` (it sets all of {', '.join(TORCHRUN_ENV)}), "
                          f"or unset {', '.join(present)} to train in one process")
    try:
        launch = Launch(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"]))
    except ValueError as exc:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc}): launch with torchrun") from None
    if not 0 <= launch.rank < launch.world_size:
        raise ConfigError(f"RANK {launch.rank} is outside WORLD_SIZE {launch.world_size}: launch with torchrun")
    return launch


def init(launch: Launch, use_cuda: bool) -> str:
    """Join the process group (NCCL on CUDA, one GPU per local rank; gloo on CPU); returns the backend."""
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        if launch.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {launch.local_rank} but only {torch.cuda.device_count()} GPU(s) visible: "
                              f"set --nproc_per_node to at most {torch.cuda.device_count()}")
        torch.cuda.set_device(launch.local_rank)  # Dassl's "cuda" device is then this rank's GPU
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=TIMEOUT)
    return backend


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """A process group is up (even of one process: it then samples batches as the ranks would)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process writes (logs, checkpoints, caches, markers): rank 0, or the only process."""
    return rank() == 0


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (writing what it makes to disk); the others run it after, reading it."""
    if is_distributed() and not is_main_process():
        dist.barrier()
    yield
    if is_distributed() and is_main_process():
        dist.barrier()


def check_seed(seed: int) -> None:
    """Several processes need one seed: unseeded, each would draw its own few-shot split and initialisation."""
    if is_distributed() and seed < 0:
        raise ConfigError(f"{world_size()} processes but no seed (SEED {seed}): each process would draw its own "
                          f"few-shot split; pass --seed N (N >= 0)")


def local_batch_size(global_batch: int, world: int) -> int:
    """Each rank's share of a global batch; the ranks' shares must be equal for the mean to be the global one."""
    if world > global_batch:
        raise ConfigError(f"{world} processes but a batch of {global_batch}: every process needs at least one "
                          f"sample; set DATALOADER.TRAIN_X.BATCH_SIZE to at least {world} or use "
                          f"--nproc_per_node {global_batch} or fewer")
    if global_batch % world:
        raise ConfigError(f"a batch of {global_batch} does not split evenly over {world} processes: set "
                          f"DATALOADER.TRAIN_X.BATCH_SIZE to a multiple of {world}")
    return global_batch // world


def broadcast_parameters(params: Iterable[torch.Tensor]) -> None:
    """Start every rank from rank 0's values (an unseeded initialisation differs per process)."""
    if is_distributed():
        for p in params:
            dist.broadcast(p.data, src=0)


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace each gradient by its mean over the ranks, in one all-reduce."""
    if not is_distributed() or world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
