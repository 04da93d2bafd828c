"""Multi-process training with PyTorch DDP, launched by ``torchrun``.

``torchrun --nproc_per_node G [--nnodes N --node_rank R --rdzv_endpoint HOST:PORT] -m MODULE``
starts one process per device and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them (the one place this
module reads the environment) and joins the process group: NCCL on GPUs, gloo on the CPU. Without
them it returns a single-process :class:`DistInfo` and nothing else changes.

Batches: every rank takes its contiguous share of each *global* batch drawn from one seeded
permutation (:func:`rank_batches`), so the ranks together see exactly the batches a single process
with the same global batch would see, and DDP's gradient average equals that process's gradient
up to what depends on the batch: BatchNorm, where each rank normalises with the statistics of its
own share unless ``sync_bn`` converts the model's BatchNorms to ``SyncBatchNorm`` (CUDA only), and
anything that pairs samples within the model's input (the image CrossNorm pairs within a rank's
share). :class:`GhostBatch` reproduces per-rank BatchNorm statistics in one process.

The released ImageNet code (``imagenet.py``) used ``nn.DataParallel`` instead, which cuts each
model input into contiguous per-GPU chunks after the data are prepared: ``run-sn.sh``,
``run-cn.sh`` and ``run-cnsn.sh`` ran on one GPU (BatchNorm over the whole batch of 128),
``run-cnsn-consist.sh`` on 4 (32 images per GPU in each of its three passes) and
``run-cnsn-augmix.sh`` on 8, on the stacked clean, AugMix and AugMix views (768 images in chunks
of 96, so some GPUs normalise clean images only). DDP ranks instead each stack their own three
views, so one rank's BatchNorm batch mixes the views; ``GhostBatch(model, k)`` in one process
cuts the input as DataParallel on ``k`` GPUs does.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sncn.layers import SWITCH_SLOTS, style_layers
from sncn.utils import resolve_device

__all__ = [
    "DistInfo",
    "GhostBatch",
    "all_reduce_sum",
    "cleanup",
    "init_distributed",
    "is_main",
    "rank_batches",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use."""
        return self.backend is not None


def init_distributed(device: str | None = None, timeout_s: float = 1800) -> DistInfo:
    """Join the process group that ``torchrun`` set up, or run as a single process.

    Args:
        device: ``"cuda"`` or ``"cpu"``; default CUDA when available. Under torchrun each process
            takes GPU ``LOCAL_RANK`` (NCCL); on the CPU the backend is gloo.
        timeout_s: collective timeout.

    Returns:
        The :class:`DistInfo` of this process.
    """
    dev = resolve_device(device)
    kind = dev.type
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return DistInfo(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available.")
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistInfo(rank, world, local_rank, dev, backend)


def is_main() -> bool:
    """True in a single process and on rank 0."""
    return not dist.is_initialized() or dist.get_rank() == 0


def cleanup() -> None:
    """Leave the process group: every rank waits at a barrier first, then destroys it.

    Without the barrier, a rank that finishes early can tear down gloo while another still
    talks to it, and that rank aborts.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, info: DistInfo, sync_bn: bool = False) -> nn.Module:
    """``model`` on ``info.device``, wrapped in DDP when distributed.

    Args:
        model: the network.
        info: from :func:`init_distributed`.
        sync_bn: convert BatchNorms to ``SyncBatchNorm`` (CUDA only): statistics over the global
            batch. False: each rank's statistics over its own share (the released multi-GPU
            scripts' ``nn.DataParallel`` also normalised per GPU; the single-GPU ones over the
            whole batch, see the module docstring).

    Returns:
        The model, or ``DistributedDataParallel(model)``.
    """
    model = model.to(info.device)
    if not info.distributed:
        return model
    if sync_bn:
        if info.device.type != "cuda":
            raise ValueError("SyncBatchNorm needs CUDA; use sync_bn=False on the CPU.")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # each rank sets its style layers' switches itself (sncn.layers.StyleLayer): DDP's buffer
    # broadcast before every forward would write them in place, under a backward still to run
    switches = [f"{name}.switch_{k}" for name, _ in style_layers(model)
                for k in range(SWITCH_SLOTS)]  # fmt: skip
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, switches)
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def rank_batches(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
) -> Iterator[Tensor]:
    """Index batches of this rank: its contiguous share of each full global batch.

    One permutation of ``range(n)`` (from ``generator``, the same on every rank) is cut into
    global batches of ``batch_size`` (the last partial one dropped); rank ``r`` takes items
    ``[r * b, (r + 1) * b)`` of each, ``b = batch_size / world_size``.

    Args:
        n: dataset size.
        batch_size: the global batch, divisible by ``world_size``.
        generator: seeded identically on every rank.
        rank, world_size: this process and the number of processes.
        shuffle: permute (training) or keep the order.

    Yields:
        int64 index tensors of ``batch_size / world_size`` items.
    """
    if batch_size % world_size:
        raise ValueError(
            f"the global batch {batch_size} must be divisible by the {world_size} processes."
        )
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training items.")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    share = batch_size // world_size
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start + rank * share : start + (rank + 1) * share]


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over ranks (a copy; unchanged in a single process)."""
    values = values.clone()
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class GhostBatch(nn.Module):
    """Run ``module`` on ``chunks`` equal slices of each batch: per-slice BatchNorm statistics.

    In training, this is what ``nn.DataParallel`` on ``chunks`` GPUs computes (it scatters each
    input in contiguous chunks; the released ``run-cnsn-consist.sh`` used 4 and
    ``run-cnsn-augmix.sh`` 8, the latter on its stacked clean and AugMix views), and what
    ``chunks`` DDP ranks without SyncBatchNorm compute when each rank's input is one contiguous
    chunk of the global input, in one process; outputs are concatenated in order. Anything in
    ``module`` that pairs samples (the image CrossNorm) pairs within a chunk. In eval (running
    statistics) it is ``module`` itself.

    Args:
        module: the network.
        chunks: slices per batch (the batch must divide evenly).
    """

    def __init__(self, module: nn.Module, chunks: int) -> None:
        super().__init__()
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}.")
        self.module = module
        self.chunks = chunks

    def forward(self, x: Tensor) -> Tensor:
        """``(N, ...) -> module`` outputs of the ``chunks`` slices, concatenated."""
        if not self.training or self.chunks == 1:
            return self.module(x)
        if x.shape[0] % self.chunks:
            raise ValueError(f"batch {x.shape[0]} is not divisible into {self.chunks} chunks.")
        return torch.cat([self.module(part) for part in x.chunk(self.chunks)])
