"""Several processes under torchrun: this process's place (Processes), the global batch gathered with
its gradient, and BatchNorm over the global batch for CPU processes (GlobalBatchNorm)."""
from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist

from network import EmbeddingNet
from utils import ConfigError, get_device


class _GatherBatch(torch.autograd.Function):
    """Every process's rows, in rank order: the global batch as one process would hold it.

    Backward hands each process the gradient of its own rows times the world size: every process
    computes the same global-batch loss, so DDP's average of the processes' gradients is then
    exactly the gradient one process gets from that loss."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.rows = dist.get_rank(), dist.get_world_size(), local.shape[0]
        parts = [torch.empty_like(local) for _ in range(ctx.world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows] * ctx.world


class _AllReduceSum(torch.autograd.Function):
    """A sum over the processes whose gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics (and running averages) are those of the global batch
    across processes, as in one process: torch's SyncBatchNorm for CPU processes (gloo), which
    SyncBatchNorm refuses. Two-pass mean and variance, each one all-reduce; differentiable
    through both. Evaluation, or a single process, is plain BatchNorm on the running statistics."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        # Sums in float64, as torch's CPU kernel accumulates: the statistics of a batch split
        # across processes then agree with one process's to float32 rounding.
        f64 = torch.float64
        total = _AllReduceSum.apply(torch.cat([x.sum(dims, dtype=f64), x.new_full((1,), x.numel() / x.shape[1], dtype=f64)]))
        count = total[-1].detach()
        mean = (total[:-1] / count).to(x.dtype)
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims, dtype=f64)) / count
        out = centred * torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
                self.running_var.mul_(1 - factor).add_((var.detach() * (count / (count - 1))).to(x.dtype) * factor)
        return out


def global_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Swap every BatchNorm layer of module for a GlobalBatchNorm holding the very same parameters
    and buffers (the state_dict keys and values are unchanged), in place."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
                child, (GlobalBatchNorm, torch.nn.SyncBatchNorm)):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            global_batchnorm(child)
    return module


class Processes:
    """This process's place in a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK from torchrun's
    environment, or a process group the caller set up). World size 1, without torchrun or with
    --nproc_per_node=1, is the single-process run: nothing distributed is touched and every
    method below gives back what it was given.

    The process group is made once per process and destroyed when the process exits, so that
    train() can run again in the same processes (re-making a group from torchrun's store races:
    a process may read another's address from the group before)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, validates and writes files."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str, backend: str, timeout: float) -> "Processes":
        """This process's place among torchrun's (none: one process), the process group joined with `backend`
        (auto: nccl on CUDA, gloo on CPU), waiting `timeout` seconds for the others."""
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if dist.is_available() and dist.is_initialized():  # made before, here or by the caller
            world = dist.get_world_size()
            return cls(dist.get_rank(), world, local_rank) if world > 1 else cls()
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_available():
            raise ConfigError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
        device = get_device(device)
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl" and device.type != "cuda":
            raise ConfigError("train.dist_backend nccl needs CUDA devices: use gloo (or auto) for CPU processes")
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)))
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    def place(self, device: torch.device) -> torch.device:
        """cuda:LOCAL_RANK for CUDA processes under torchrun (one GPU each); otherwise device."""
        if self.world > 1 and device.type == "cuda":
            device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: EmbeddingNet, device: torch.device) -> torch.nn.Module:
        """The module to train: the model itself for one process; else DDP over it, its BatchNorm
        layers synchronised (SyncBatchNorm on CUDA, GlobalBatchNorm on CPU). The model object
        keeps its parameters, so checkpoints and validation use it unwrapped."""
        if self.world == 1:
            return model
        if device.type == "cuda":
            assert torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) is model
        else:
            global_batchnorm(model)
        model.to(device)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def global_batch(self, emb: torch.Tensor, labels: torch.Tensor,
                     targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The global batch's embeddings (gradient to this process's rows), labels and distillation targets."""
        if self.world == 1:
            return emb, labels, targets

        def gather(t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t.contiguous())
            return torch.cat(parts)
        return _GatherBatch.apply(emb), gather(labels), None if targets is None else gather(targets)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average the gradients of parameters outside DDP (the loss's class weights). Every process
        computed them from the same global batch, so this only keeps the processes in step."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world)

    def share(self, obj):
        """Rank 0's obj on every process (the same numbers drive everybody's early stopping)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
