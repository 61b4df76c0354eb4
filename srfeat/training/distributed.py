"""Several processes, one run: DistributedDataParallel under `torchrun`, on GPUs or CPUs.

`torchrun --nproc_per_node=W -m srfeat.cli train CONFIG` (or `torchrun ... $(which srfeat)
train CONFIG`) starts W processes; each reads its rank from the environment, uses
`cuda:LOCAL_RANK` (NCCL) or the CPU (gloo), loads its share of every global batch and
averages gradients with the others. Without torchrun the same code runs as one process.

BatchNorm: with W processes each BatchNorm layer would normalise with the statistics of its
own per-process batch, so W processes with batch B would not train like one with batch W*B.
`train.sync_batchnorm` (default on) makes the statistics global: PyTorch's SyncBatchNorm on
GPUs and, because SyncBatchNorm runs only on GPUs, `CrossProcessBatchNorm2d` below on CPUs.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from srfeat.errors import ConfigError

Shared = TypeVar("Shared")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among world_size processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(setting: str, local_rank: int = 0, distributed: bool = False) -> torch.device:
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device is {setting!r} but no CUDA GPU is available (use train.device=cpu)")
        if distributed or setting == "cuda":
            return torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
    return torch.device(setting)


def init_distributed(device_setting: str) -> DistributedContext:
    """Join the torchrun process group if launched by torchrun; else a one-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, 0, pick_device(device_setting))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_setting, local_rank, distributed=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    logger.debug("process %d of %d on %s", rank, world_size, device)
    return DistributedContext(rank, world_size, local_rank, device)


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def broadcast_object(value: Shared, context: DistributedContext) -> Shared:
    """Rank 0's `value` on every rank (for decisions that all ranks must share)."""
    if not context.enabled:
        return value
    box: list[Shared] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across_processes(values: dict[str, torch.Tensor], context: DistributedContext) -> dict[str, torch.Tensor]:
    """Each value averaged over the processes (every rank calls it with the same keys, in order).

    A process's loss is that of its share of the global batch; the mean of the shares' means is
    the global batch's, what one process with the whole batch computes.
    """
    if not context.enabled or not values:
        return values
    stacked = torch.stack([value.detach().float().reshape(()) for value in values.values()])
    dist.all_reduce(stacked)
    stacked /= context.world_size
    return dict(zip(values, stacked.unbind(), strict=True))


class SumAcrossProcesses(torch.autograd.Function):
    """The sum of a tensor over all processes, differentiable: the gradient is summed likewise.

    Ours because torch's public differentiable all-reduce (torch.distributed.nn.functional) is
    deprecated (torch 2.13) for a private module that is differentiable only in recent versions.
    """

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:
        total = local.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> torch.Tensor:
        # Each process's input feeds every process's sum: its gradient is the sum of theirs.
        grad_local = grad_outputs[0].clone()
        dist.all_reduce(grad_local)
        return grad_local


class CrossProcessBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across processes.

    Works on any device and backend (gloo on CPUs), unlike nn.SyncBatchNorm. Per-channel sums
    and counts are summed with a differentiable all-reduce, so gradients flow through the
    global statistics exactly as in a single process with the whole batch.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0, 2, 3]
        count = torch.full((1,), input.numel() / input.shape[1], dtype=input.dtype, device=input.device)
        local = torch.cat([input.sum(dims), (input * input).sum(dims), count])
        total = SumAcrossProcesses.apply(local)
        channels = input.shape[1]
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels : 2 * channels] / n - mean * mean
        if self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
                self.num_batches_tracked.add_(1)
        shape = (1, channels, 1, 1)
        y = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace BatchNorm2d layers by ones with global statistics (in place where possible)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CrossProcessBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            replacement.load_state_dict(child.state_dict())
            replacement.to(device)
            setattr(module, name, replacement)
        else:
            convert_batchnorm(child, device)
    return module


class FrozenAwareDDP(nn.Module):
    """A discriminator in DDP for the GAN step.

    The generator's update runs the discriminators with their parameters frozen
    (requires_grad False); DDP would then wait for gradients that never come. Those forward
    passes go to the bare module, the discriminator's own update goes through DDP.
    """

    def __init__(self, ddp: DistributedDataParallel) -> None:
        super().__init__()
        self.ddp = ddp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frozen = not any(p.requires_grad for p in self.ddp.module.parameters())
        return self.ddp.module(x) if frozen or not torch.is_grad_enabled() else self.ddp(x)


def wrap_ddp(module: nn.Module, context: DistributedContext) -> nn.Module:
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # Buffers (BatchNorm statistics) are not broadcast from rank 0 at each forward: they are
    # global already (train.sync_batchnorm), or per process by choice. The switch was renamed
    # (broadcast_buffers is deprecated in torch 2.13); the new one also syncs them once at the
    # start, which changes nothing: every rank starts from the same weights and statistics.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
