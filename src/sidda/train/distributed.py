r"""Training on several processes (DistributedDataParallel), ``docs/distributed.md``.

``torchrun --nproc_per_node=N -m sidda train ...`` starts N processes (ranks). Each rank holds a
replica of the model wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (DDP), reads
its own shard of every global batch and computes its part of the objective; DDP averages the
model gradients over the ranks. The backend is nccl on the GPU and gloo on the CPU.

**Global batch.** ``train.batch_size`` stays the *global* batch per domain: every rank draws the
same index batches (same seed, same epoch; :func:`sidda.datasets.batches` and
:func:`~sidda.datasets.cycle_batches`) and keeps its contiguous slice
(:func:`~sidda.train.collectives.shard_indices`), so N ranks see exactly the images that one
process sees. Each rank makes the method's forward passes on its shards
(:meth:`~sidda.methods.base.DAMethod.forward_passes`: one concatenated pass by default, so its
BatchNorm keeps the paper's source/target mix; one pass per domain, inside DDP's ``no_sync``,
when the method keeps BatchNorm statistics per domain).

**One objective on every rank.** Write :math:`L_r` for the loss that rank r backpropagates. DDP
averages gradients, so the model descends :math:`\frac1N \sum_r L_r`. Every collective
has a backward that sums the incoming gradients over the ranks (the adjoint of a sum or a
gather), which is what makes that average come out right.
:func:`~sidda.train.step.method_loss` makes *every* :math:`L_r` equal to the same number, the
single-process objective: the latents, logits and labels of all ranks are gathered
(:func:`~sidda.train.collectives.gather_with_grad`; each rank gets back the gradient of its own
rows) and every rank evaluates the method on the whole global batch, as one process does. For
SIDDA that is the dynamic blur and the Sinkhorn divergence of the global batch and the mean
cross-entropy over it: same blur, same divergence, same gradients (up to float rounding), so a
run's outcome does not depend on how many processes computed it. It costs one all-gather of
the ``(B_s + B_t, D)`` latents and ``(B_s + B_t, K)`` logits and one all-reduce of their
gradient per step, and every rank solves the full ``B_s x B_t`` transport problem (the same
work as one process). The cross-entropy of the warm-up and of the source-only baseline is
all-reduced instead (:func:`distributed_cross_entropy`).

**The method's parameters** (SIDDA's etas, a domain head) live outside DDP. Since every rank
evaluates the same objective on the same gathered batch, their gradients are the
single-process gradients on every rank; :func:`~sidda.train.collectives.average_gradients`
then all-reduces them anyway, so that rounding differences between devices can never make the
ranks' copies drift apart. Latent distances that overflow are seen alike by every rank, which
all skip the step (``max distance``).

**Precision.** :func:`~sidda.train.device.autocast_context` gives bf16 autocast on CUDA; the
objective turns autocast off and casts the latents and logits to float32, so the Sinkhorn
iterations, the blur and the cross-entropy always run in float32.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import warnings

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from sidda.errors import InputError
from sidda.models import unwrap  # re-exported: validate, export and save through it
from sidda.train.collectives import DistContext, all_reduce_with_grad
from sidda.train.device import _no_autocast, _resolve_device

__all__ = [
    "convert_sync_batchnorm",
    "distributed_cross_entropy",
    "init_distributed",
    "prepare_model",
    "shutdown",
    "unwrap",
]

logger = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(
            f"environment variable {name}={value!r} is not an integer; start the run with "
            "torchrun --nproc_per_node=N -m sidda train ..., which sets it"
        ) from None


def init_distributed(
    device: str | torch.device = "auto", *, timeout_s: float = 1800.0
) -> DistContext:
    """Join the process group that torchrun set up, or describe a single process.

    Reads torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``. Without ``WORLD_SIZE`` (or with 1) nothing is initialised and the context is
    rank 0 of 1. Otherwise the process group uses nccl for ``cuda`` (rank r on
    ``cuda:LOCAL_RANK``, made the current device) and gloo for ``cpu``. A process group that
    already exists is reused.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:<i>"`` (one process only) or ``"auto"``.
        timeout_s: Seconds a collective may wait for the other ranks.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        dev = _resolve_device(device, local_rank=local_rank, world_size=world_size)
        return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev,
                           backend=str(dist.get_backend()))
    world_size = _env_int("WORLD_SIZE") if "WORLD_SIZE" in os.environ else 1
    if world_size < 1:
        raise InputError(f"WORLD_SIZE must be >= 1, got {world_size}")
    if world_size == 1:
        return DistContext(device=_resolve_device(device, local_rank=0, world_size=1))
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise InputError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; start the run with "
            "torchrun --nproc_per_node=N -m sidda train ..."
        )
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size or local_rank < 0:
        raise InputError(
            f"RANK={rank} and LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world_size}"
        )
    dev = _resolve_device(device, local_rank=local_rank, world_size=world_size)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        backend, init_method="env://", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    logger.info("rank %d of %d on %s (%s)", rank, world_size, dev, backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev,
                       backend=backend)


def shutdown() -> None:
    """Leave the process group, if one exists (call once, at the end, on every rank)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def distributed_cross_entropy(logits_s: Tensor, y_s: Tensor, ctx: DistContext) -> Tensor:
    """Cross-entropy averaged over the global batch, the same 0-d value on every rank.

    For the warm-up epochs and the source-only baseline: rank shards of any sizes give the
    single-process mean. Runs in float32 with autocast off.

    Args:
        logits_s: This rank's source logits, shape (b_s, K).
        y_s: This rank's labels, shape (b_s,).
        ctx: The distributed context.
    """
    with _no_autocast(logits_s.device):
        if not ctx.is_distributed:
            return F.cross_entropy(logits_s.float(), y_s)
        ce_sum = F.cross_entropy(logits_s.float(), y_s, reduction="sum")
        count = torch.tensor(float(len(y_s)), device=ce_sum.device)
        s = all_reduce_with_grad(torch.stack([ce_sum, count]), ctx)  # (2,)
        count = s[1].detach()
        if float(count) == 0:
            raise ValueError("the global source batch is empty")
        return s[0] / count


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``model`` by a SyncBatchNorm with the same state.

    torch's ``SyncBatchNorm.convert_sync_batchnorm`` rebuilds containers with ``add_module``,
    which escnn's ``SequentialModule`` refuses (it checks that field types chain); this swaps
    the layers in place instead, so escnn models (whose ``InnerBatchNorm`` holds torch
    BatchNorm layers) convert too. Returns ``model`` itself (a lone BatchNorm: its
    replacement).
    """
    if isinstance(model, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
                child, nn.SyncBatchNorm
            ):
                setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return model


def prepare_model(
    model: nn.Module,
    ctx: DistContext,
    *,
    sync_batchnorm: bool = True,
    channels_last: bool = False,
) -> nn.Module:
    """Move ``model`` to the rank's device and wrap it in DDP when there are several ranks.

    Call after the model is built (and its checkpoint loaded, when resuming): DDP copies rank
    0's weights and buffers to the other ranks here, once. BatchNorm becomes SyncBatchNorm on CUDA
    when ``sync_batchnorm``; on the CPU torch has none, so each rank's BatchNorm normalises
    with its own shard (a warning says so). The wrapper's ``state_dict`` keys start with
    ``module.``; save :func:`unwrap` (or :func:`sidda.models.model_state`, which unwraps).

    Args:
        model: The classifier.
        ctx: The distributed context.
        sync_batchnorm: Synchronise BatchNorm statistics across ranks (CUDA only).
        channels_last: NHWC memory format for the weights (pair with :func:`to_device`).
    """
    model = model.to(ctx.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not ctx.is_distributed:
        return model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if sync_batchnorm and has_bn:
        if ctx.device.type == "cuda":
            model = convert_sync_batchnorm(model)
        elif ctx.is_main:
            warnings.warn(
                "SyncBatchNorm needs CUDA; on the CPU each rank's BatchNorm uses the statistics "
                "of its own shard, so the forward pass differs from a single process",
                stacklevel=2,
            )
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # DDP copies rank 0's buffers once, here; re-broadcasting them before every forward (escnn
    # keeps its filter bases in buffers) would only overwrite the other ranks' BatchNorm
    # running statistics, which nobody saves. torch >= 2.13 spells this forward_sync_buffers
    # (its broadcast_buffers=False skips the copy at wrapping too).
    ddp = nn.parallel.DistributedDataParallel
    no_resync = ({"forward_sync_buffers": False}
                 if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
                 else {"broadcast_buffers": False})
    # A convolution with one input channel has a weight that is both NCHW- and NHWC-contiguous;
    # its backward may pick the other layout, and DDP then copies the gradient into its bucket
    # and warns at every start. The copy is exact and cheap: silence that warning only.
    warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides",
                            UserWarning)
    return ddp(model, device_ids=device_ids, **no_resync)
