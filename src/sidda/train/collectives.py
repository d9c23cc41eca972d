r"""Collective operations between the ranks of a run (:mod:`sidda.train.distributed`).

:class:`DistContext` says where a process stands (rank, number of ranks, device); every
function here takes it and is the identity (or a plain copy) for a single process, so the
training loop calls them unconditionally.

* With gradient: :func:`gather_with_grad` (all-gather along dim 0, unequal row counts allowed)
  and :func:`all_reduce_with_grad` (sum). The backward pass of both sums the incoming gradient
  over the ranks (the adjoint of a gather or of a sum), so that a loss evaluated on gathered
  values on every rank, with DDP averaging the ranks' gradients, gives the single-process
  gradient.
* Without: :func:`average_gradients` (the etas, outside DDP), :func:`max_over_ranks` (a
  decision every rank takes together), :func:`gather_object` and :func:`broadcast_object`
  (small picklable state).
* :func:`shard_indices`: this rank's contiguous slice of a global batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistContext",
    "all_reduce_with_grad",
    "average_gradients",
    "broadcast_object",
    "gather_object",
    "gather_with_grad",
    "max_over_ranks",
    "shard_indices",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device.

    ``backend`` is None when no process group exists (a single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that logs to files and writes the run directory."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one rank, so the collectives of this module communicate."""
        return self.world_size > 1


def shard_indices(idx: Tensor, ctx: DistContext) -> Tensor:
    """This rank's contiguous slice of a global batch of indices.

    The shard sizes differ by at most one (lower ranks get the larger ones) and are empty when
    the batch holds fewer than ``world_size`` indices. Concatenating the shards in rank order
    gives ``idx`` back, so gathered latents keep the single-process order. The same rule
    applies to the source and the target stream.

    >>> shard_indices(torch.arange(5), DistContext(rank=1, world_size=2))
    tensor([3, 4])
    """
    if ctx.world_size == 1:
        return idx
    return idx.tensor_split(ctx.world_size)[ctx.rank]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (rows of unequal counts allowed); backward: sum the gradient
    over the ranks, keep this rank's rows."""

    @staticmethod
    def forward(ctx, z: Tensor, sizes: list[int], rank: int) -> Tensor:  # noqa: D102
        ctx.sizes, ctx.rank = sizes, rank
        n_max = max(sizes)
        z = z.contiguous()
        if len(z) < n_max:  # all_gather needs equal shapes: pad, then drop the padding
            z = torch.cat([z, z.new_zeros((n_max - len(z), *z.shape[1:]))])
        parts = [torch.empty_like(z) for _ in sizes]
        dist.all_gather(parts, z)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over the ranks; backward: sum the gradient over the ranks."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        y = x.contiguous().clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _gather_counts(counts: Sequence[int], device: torch.device) -> list[list[int]]:
    """Every rank's ``counts``, in rank order (one small all-gather)."""
    t = torch.tensor(list(counts), dtype=torch.int64, device=device)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return [p.tolist() for p in parts]


def gather_with_grad(z: Tensor, ctx: DistContext, *, sizes: Sequence[int] | None = None) -> Tensor:
    r"""Concatenate every rank's ``z`` along dim 0, in rank order, keeping the gradient.

    The backward sums the incoming gradient over the ranks and returns this rank's rows. With
    DDP averaging the model gradients, that is the gradient of the mean over the ranks of
    their losses: when every rank computes the same loss of the gathered tensor, rank r's rows
    get N times its gradient and DDP's 1/N brings it back to the single-process value.

    Args:
        z: This rank's rows, shape (n_r, ...). Ranks may hold different counts.
        ctx: The distributed context.
        sizes: Every rank's row count, if known (saves one small all-gather).

    Returns:
        Shape (sum_r n_r, ...); ``z`` itself for a single process.
    """
    if not ctx.is_distributed:
        return z
    if sizes is None:
        sizes = [c[0] for c in _gather_counts([len(z)], z.device)]
    sizes = [int(s) for s in sizes]
    if len(sizes) != ctx.world_size or sizes[ctx.rank] != len(z):
        raise ValueError(
            f"sizes {sizes} do not match world_size {ctx.world_size} and this rank's "
            f"{len(z)} rows; pass sizes=None to gather them"
        )
    return _GatherWithGrad.apply(z, sizes, ctx.rank)


def all_reduce_with_grad(x: Tensor, ctx: DistContext) -> Tensor:
    """Sum ``x`` over the ranks, keeping the gradient (backward: the summed gradient).

    >>> all_reduce_with_grad(torch.tensor([1.0, 2.0]), DistContext())
    tensor([1., 2.])
    """
    if not ctx.is_distributed:
        return x
    return _AllReduceWithGrad.apply(x)


def average_gradients(params: Iterable[nn.Parameter], ctx: DistContext) -> None:
    """Average the gradients of parameters that DDP does not manage (the etas) over the ranks.

    Call after ``backward()`` and before the optimiser step. Parameters without a gradient
    (the warm-up) are skipped; every rank must hold gradients for the same parameters.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not ctx.is_distributed or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


def max_over_ranks(value: int, ctx: DistContext) -> int:
    """The largest of every rank's ``value``: a decision that all ranks must take together.

    A flag (``1`` if anything is wrong on this rank) or a signal number (one rank received
    SIGTERM): every rank gets the same answer, so all of them skip a step or stop together.

    >>> max_over_ranks(3, DistContext())
    3
    """
    if not ctx.is_distributed:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_object(obj: T, ctx: DistContext) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank.

    For small state that differs between ranks, such as their random-number generators,
    which rank 0 saves for all of them.

    >>> gather_object("state", DistContext())
    ['state']
    """
    if not ctx.is_distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, ctx: DistContext) -> T:
    """Rank 0's ``obj`` (picklable) on every rank: a decision only rank 0 takes (early
    stopping after its validation) or a name only it chooses (the run directory).

    >>> broadcast_object(True, DistContext())
    True
    """
    if not ctx.is_distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device)
    return box[0]
