"""Data-parallel training across processes (torch DistributedDataParallel) for ``fit``.

Launch any training with torchrun; nothing else changes::

    torchrun --nproc-per-node 2 -m lowbit train --model lenet5 --epochs 3 --out runs/ddp

``fit`` sees ``WORLD_SIZE > 1`` in the environment (torchrun sets ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and then:

- initialises the default process group (gloo on CPU, NCCL on CUDA, each rank on GPU
  ``LOCAL_RANK``) unless the caller already did, and destroys it at the end if it made it;
- wraps the model in ``DistributedDataParallel`` (parameters and buffers broadcast from rank
  0, gradients averaged by all-reduce after every backward);
- keeps ``batch_size`` the **global** batch: every step takes the same global batch a single
  process would (``lowbit.data.batch_order`` is a pure function of seed and epoch, so every
  rank computes the same order without communication) and each rank runs its contiguous share
  of it (:func:`shard`; sizes differ by at most one on a last, short batch).  Each rank's mean
  loss is scaled by ``world * n_rank / n_batch`` so that DDP's average of the ranks' gradients
  is exactly the gradient of the mean loss over the whole global batch (for a ``loss_fn`` that
  is a mean over the batch, like the default cross-entropy);
- evaluates the validation set sharded the same way and sums loss / correct counts across
  ranks (all-reduce), so every rank knows the same metrics;
- lets rank 0 alone write the checkpoint, ``history.json`` (and, in ``lowbit train``,
  ``result.json`` and the test accuracy) and print progress; the other ranks are quiet;
- resumes (``--resume``) on every rank from the same checkpoint file.

BatchNorm: plain DDP -- each rank normalises with its own shard's batch statistics, and the
running statistics that are saved (and broadcast to the other ranks before every forward)
are rank 0's.  With a per-rank batch of 64 or more this is what most data-parallel training
does; results then differ slightly from one process with the whole batch (models without
BatchNorm, e.g. lenet300, match it up to float rounding).  ``fit(..., sync_bn=True)``
converts BatchNorms to ``torch.nn.SyncBatchNorm`` (statistics over the global batch), which
torch implements for GPUs only; on CPU it is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Context", "setup", "shard", "world_from_env"]


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"distributed: bad RANK / LOCAL_RANK / WORLD_SIZE in the environment "
                         f"({e})") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"distributed: RANK {rank} / WORLD_SIZE {world} are inconsistent")
    return rank, world, local


@dataclass
class Context:
    """One process's place in a (possibly single-process) run."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    def device(self, dev: torch.device) -> torch.device:
        """The device of this rank: CUDA device ``LOCAL_RANK`` when training on CUDA."""
        if self.active and dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", self.local_rank)
        return dev

    def wrap(self, model: nn.Module, dev: torch.device, sync_bn: bool = False) -> nn.Module:
        """The module to call for training: DDP around ``model`` (or ``model`` itself)."""
        if not self.active:
            return model
        if sync_bn:
            if dev.type != "cuda":
                raise ValueError("sync_bn: torch's SyncBatchNorm runs on GPUs only; on CPU "
                                 "each rank normalises with its own batch statistics (the "
                                 "default)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [dev.index] if dev.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Element-wise sums of scalar tensors over all ranks (one all-reduce)."""
        if not self.active:
            return list(values)
        flat = torch.stack([v.detach().to(torch.float64) for v in values])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return [flat[i].to(v.dtype) for i, v in enumerate(values)]

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank updated
        its own from its shard in the last forward; evaluation and the checkpoint use rank 0's."""
        if self.active:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def check_in_step(self, model: nn.Module, what: str) -> None:
        """Raise if the ranks' parameters differ (a rank that did not load the checkpoint's
        optimizer state, a layer updated outside autograd differently per rank...): one
        checksum per parameter, compared by a MAX and a MIN all-reduce."""
        if not self.active:
            return
        sums = torch.stack([p.detach().double().sum() for p in model.parameters()]
                           or [torch.zeros((), dtype=torch.float64)])
        lo, hi = sums.clone(), sums.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise RuntimeError(f"distributed: the ranks' parameters differ {what}; the replicas "
                               f"are out of step")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: torch.device) -> Context:
    """The context of this process: initialises the default process group when torchrun
    started several ranks and nobody initialised it yet (gloo on CPU, NCCL on CUDA)."""
    rank, world, local = world_from_env()
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), local, False)
    if world == 1:
        return Context()
    if not dist.is_available():
        raise ValueError("distributed: WORLD_SIZE > 1 but this torch build has no "
                         "torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return Context(dist.get_rank(), dist.get_world_size(), local, True)


def shard(n: int, rank: int, world: int) -> slice:
    """The contiguous part ``rank`` takes of ``n`` items split over ``world`` ranks (the first
    ``n % world`` ranks take one more); may be empty when ``n < world``."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))
