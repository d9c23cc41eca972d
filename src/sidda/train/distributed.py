r"""Training on several processes (DistributedDataParallel), ``docs/distributed.md``.

``torchrun --nproc_per_node=N -m sidda train ...`` starts N processes (ranks). Each rank holds a
replica of the model wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (DDP), reads
its own shard of every global batch and computes its part of the objective; DDP averages the
model gradients over the ranks. The backend is nccl on the GPU and gloo on the CPU.

**Global batch.** ``train.batch_size`` stays the *global* batch per domain: every rank draws the
same index batches (same seed, same epoch; :func:`sidda.datasets.batches` and
:func:`~sidda.datasets.cycle_batches`) and keeps its contiguous slice
(:func:`~sidda.train.collectives.shard_indices`), so N ranks see exactly the images that one
process sees. Each rank concatenates its source and target shards into one forward pass, so its
BatchNorm keeps the paper's source/target mix.

**One objective on every rank.** Write :math:`L_r` for the loss that rank r backpropagates. DDP
averages gradients, so the model descends :math:`\frac1N \sum_r L_r`. Every collective below
has a backward that sums the incoming gradients over the ranks (the adjoint of a sum or a
gather), which is what makes that average come out right. :func:`distributed_sidda_loss` makes
*every* :math:`L_r` equal to the same number:

.. math::

    \mathrm{CE} = \frac{1}{n_s} \sum_r \sum_{i \in r} \mathrm{ce}_i, \qquad
    L = \frac{\mathrm{CE}}{2\eta_1^2} + \frac{\mathrm{DA}}{2\eta_2^2} + \log(\eta_1\eta_2),

where the summed cross-entropy is all-reduced
(:func:`~sidda.train.collectives.all_reduce_with_grad`), so the CE is the mean over the global
batch whatever the shard sizes, and the DA term depends on ``da_scope``
(:class:`~sidda.train.config.DistConfig`):

``"global"`` (the default)
    The latents of all ranks are gathered (:func:`~sidda.train.collectives.gather_with_grad`;
    each rank gets back the gradient of its own rows) and every rank computes the dynamic blur
    and the Sinkhorn divergence of the whole global batch (``SIDDALoss.alignment``, as one
    process does). This is the single-process objective, exactly: same
    blur, same divergence, same gradients (up to float rounding). It costs one all-gather of
    ``(B_s + B_t, D)`` latents and one all-reduce of their gradient per step, and every rank
    solves the full ``B_s x B_t`` transport problem (the same work as one process).
``"local"``
    Each rank computes the blur and the divergence on its own ``B/N`` points, and the ranks
    average the divergences. Cheaper (the transport problem shrinks by N^2), but a different
    estimator: the debiased Sinkhorn divergence of two small samples is a biased estimate of
    the divergence between the distributions, and its bias grows as the samples shrink. The
    blur also follows each shard's own geometry. Results then depend on the number of ranks.

The default is ``"global"`` because it keeps the method what the paper defines (and makes a
run's outcome independent of how many processes computed it); choose ``"local"`` only when the
global transport problem is the bottleneck.

**The etas.** The loss coefficients of :class:`~sidda.losses.SIDDALoss` live outside DDP. Since
every rank evaluates the same :math:`L` on the same all-reduced CE and DA values, their gradients
are the single-process gradients on every rank. :func:`~sidda.train.collectives.average_gradients`
then all-reduces them anyway, so that rounding differences between devices can never make the
ranks' etas drift apart.

**Precision.** :func:`~sidda.train.device.autocast_context` gives bf16 autocast on CUDA; the loss
functions here turn autocast off and cast the latents to float32, so the Sinkhorn iterations, the
blur and the cross-entropy always run in float32.
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
from sidda.losses import SIDDALoss, SIDDAOutput
from sidda.models import unwrap  # re-exported: validate, export and save through it
from sidda.train.collectives import (
    DistContext,
    _gather_counts,
    all_reduce_with_grad,
    gather_with_grad,
)
from sidda.train.config import DA_SCOPES
from sidda.train.device import _no_autocast, _resolve_device

__all__ = [
    "convert_sync_batchnorm",
    "distributed_cross_entropy",
    "distributed_sidda_loss",
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


def distributed_sidda_loss(
    criterion: SIDDALoss,
    logits_s: Tensor,
    y_s: Tensor,
    z_s: Tensor,
    z_t: Tensor,
    ctx: DistContext,
    *,
    da_scope: str = "global",
) -> SIDDAOutput:
    """:class:`~sidda.losses.SIDDALoss` on a batch split over the ranks.

    Every rank gets the same :class:`~sidda.losses.SIDDAOutput` (see the module docstring);
    ``total`` is what each rank backpropagates. With ``da_scope="global"`` it equals the
    single-process loss of the concatenated global batch; with ``"local"`` the DA term, the
    blur and the maximum distance are means over the ranks of per-rank values. The pieces are
    the loss's own (:meth:`~sidda.losses.SIDDALoss.alignment` and
    :meth:`~sidda.losses.SIDDALoss.output`); a single process calls ``criterion`` itself.
    Autocast is off and the latents are cast to float32. Latent distances that overflow give
    a non-finite ``max_distance`` and a NaN DA term, with one process as on every rank, so
    that all ranks skip the step together.

    Args:
        criterion: The loss module (etas and Sinkhorn options).
        logits_s: This rank's source logits, shape (b_s, K).
        y_s: This rank's source labels, shape (b_s,).
        z_s: This rank's source latents, shape (b_s, D).
        z_t: This rank's target latents, shape (b_t, D).
        ctx: The distributed context.
        da_scope: ``"global"`` or ``"local"``.

    Raises:
        ValueError: On every rank alike, if the global batch (``"global"``) or some rank's
            shard (``"local"``) has no source or no target latent.
    """
    if da_scope not in DA_SCOPES:
        raise ValueError(f"da_scope must be one of {DA_SCOPES}, got {da_scope!r}")
    with _no_autocast(z_s.device):
        if not ctx.is_distributed:
            return criterion(logits_s.float(), y_s, z_s.float(), z_t.float())
        sizes = _gather_counts([len(z_s), len(z_t)], z_s.device)  # [[b_s, b_t] per rank]
        n_s, n_t = sum(s for s, _ in sizes), sum(t for _, t in sizes)
        empty = n_s == 0 or n_t == 0 or (da_scope == "local" and min(map(min, sizes)) == 0)
        if empty:
            raise ValueError(
                f"a Sinkhorn term needs source and target latents; the shards (source, target) "
                f"per rank are {sizes}. Use global batches of at least world_size="
                f"{ctx.world_size} images per domain, or da_scope='global'"
            )
        ce_sum = F.cross_entropy(logits_s.float(), y_s, reduction="sum")
        if da_scope == "global":
            z = gather_with_grad(torch.cat([z_s, z_t]).float(), ctx,
                                 sizes=[s + t for s, t in sizes])  # (n_s + n_t, D)
            blocks = list(zip(z.split([s + t for s, t in sizes]), sizes, strict=True))
            z_s_all = torch.cat([b[:s] for b, (s, _) in blocks])  # (n_s, D), rank order
            z_t_all = torch.cat([b[s:] for b, (s, _) in blocks])  # (n_t, D)
            da, blur, max_distance = criterion.alignment(z_s_all, z_t_all)
            ce = all_reduce_with_grad(ce_sum, ctx) / n_s
        else:
            da_r, blur, max_distance = criterion.alignment(z_s.float(), z_t.float())
            extra = torch.tensor([blur, max_distance], device=da_r.device)
            s = all_reduce_with_grad(torch.cat([torch.stack([ce_sum, da_r]), extra]), ctx)
            ce, da = s[0] / n_s, s[1] / ctx.world_size
            blur, max_distance = (float(v) / ctx.world_size for v in s[2:].detach())
        return criterion.output(ce, da, blur, max_distance)


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
