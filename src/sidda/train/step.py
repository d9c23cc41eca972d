"""One optimisation step of a domain-adaptation method or of the source-only baseline.

:func:`train_step` is what :func:`sidda.train.loop.fit` runs for every batch, and what
``benchmarks/gpu_step.py`` times. A SIDDA step makes one forward pass on ``cat([x_s, x_t])`` (bf16
autocast on CUDA, :func:`~sidda.train.device.autocast_context`), computes
:class:`~sidda.losses.SIDDALoss` in float32
(:func:`~sidda.train.distributed.distributed_sidda_loss`), backpropagates, averages the etas'
gradients over the ranks, clips the model gradients and steps. Any other method
(:mod:`sidda.methods`) gets the split latents and logits of the same forward pass
(:func:`method_loss`, gathered over the ranks). A warm-up or baseline step does the same with the
cross-entropy alone.

**Non-finite steps.** A non-finite latent, loss or gradient skips the update: the gradients
are dropped, neither the optimizer nor the etas move, and ``skipped`` names what was
non-finite. With several ranks every such decision is the same on every rank (the latents'
check is agreed with :func:`~sidda.train.distributed.max_over_ranks`; the losses and the clipped
gradients are already equal everywhere), so that no rank waits in a collective that another
one skipped.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from sidda.methods.base import DAMethod, MethodOutput, StepOutputs
from sidda.methods.sidda import SIDDAMethod
from sidda.train.collectives import (
    DistContext,
    _gather_counts,
    average_gradients,
    gather_with_grad,
    max_over_ranks,
)
from sidda.train.config import DistConfig
from sidda.train.device import _no_autocast, autocast_context
from sidda.train.distributed import distributed_cross_entropy, distributed_sidda_loss, unwrap

__all__ = ["STEP_KEYS", "method_loss", "train_step"]

#: The values :func:`train_step` returns (None where they do not apply).
STEP_KEYS = ("ce", "da", "blur", "max_distance", "total", "grad_norm", "skipped")


def train_step(
    net: nn.Module,
    x_s: Tensor,
    y_s: Tensor,
    x_t: Tensor | None,
    *,
    criterion: DAMethod | None,
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    ctx: DistContext | None = None,
    dist_cfg: DistConfig | None = None,
    progress: float = 0.0,
) -> dict:
    """One step on a source batch, and a target batch after the warm-up (``x_t``, else None).

    Args:
        net: The model (returning ``(latent, logits)``), in DDP with several ranks.
        x_s: This rank's source images, shape (b_s, C, H, W), on its device.
        y_s: Their labels, shape (b_s,).
        x_t: This rank's target images, shape (b_t, C, H, W), or None for cross-entropy alone.
        criterion: The domain-adaptation method (:class:`~sidda.methods.base.DAMethod`, whose
            own parameters ``optimizer`` steps too); None only for cross-entropy steps.
        optimizer: Steps the model parameters (and the method's).
        grad_clip: Max norm of the model gradients (the method's parameters are not clipped).
        ctx: This process's rank and device (None: one process).
        dist_cfg: bf16 autocast and the Sinkhorn scope (None: the defaults).
        progress: Fraction of the alignment phase done, in [0, 1] (method schedules).

    Returns:
        The logged values, keyed by :data:`STEP_KEYS` plus the method's own logs, the same on
        every rank. ``skipped`` names what was non-finite (``latents``, ``max distance``,
        ``CE``, ``DA``, ``total``, ``gradient``), or is None for a normal step.
    """
    ctx, dist_cfg = ctx or DistContext(device=x_s.device), dist_cfg or DistConfig()
    optimizer.zero_grad(set_to_none=True)
    out: dict = dict.fromkeys(STEP_KEYS)
    bad, objective = [], None
    autocast = autocast_context(ctx.device, enabled=dist_cfg.bf16)  # the forward pass only
    if x_t is not None:
        b = len(x_s)
        stats = getattr(criterion, "domain_stats", None)
        with autocast:
            if stats is None:
                z, logits = net(torch.cat([x_s, x_t]))  # (B_s + B_t, D), (B_s + B_t, K)
            else:  # domain-specific BatchNorm: one pass per domain, each with its statistics
                with _no_sync(net, ctx):  # two passes: DDP cannot reduce them; done below
                    z_s, logits_s = net(x_s)
                    with stats.target():
                        z_t, logits_t = net(x_t)
                z, logits = torch.cat([z_s, z_t]), torch.cat([logits_s, logits_t])
        if max_over_ranks(not bool(torch.isfinite(z).all()), ctx):
            bad.append("latents")
        elif isinstance(criterion, SIDDAMethod):
            objective = _sidda_objective(criterion, logits, y_s, z, b, ctx, dist_cfg, out, bad,
                                         progress)
        else:
            res = method_loss(criterion, z[:b], z[b:], logits[:b], logits[b:], y_s, ctx,
                              progress=progress)
            objective = res.total
            out.update(ce=res.ce.item(), da=res.da.item(), total=objective.item(), **res.logs)
        if objective is None:
            with torch.no_grad():
                out["ce"] = distributed_cross_entropy(logits[:b].detach(), y_s, ctx).item()
    else:
        with autocast:
            _, logits = net(x_s)
        objective = distributed_cross_entropy(logits, y_s, ctx)  # float32
        out.update(ce=objective.item(), total=objective.item())
    bad += [name for name, key in (("CE", "ce"), ("DA", "da"), ("total", "total"))
            if out[key] is not None and not math.isfinite(out[key])]
    if not bad:
        objective.backward()  # DDP averages the model gradients over the ranks here
        if criterion is not None:
            average_gradients(criterion.parameters(), ctx)
            if x_t is not None and getattr(criterion, "domain_stats", None) is not None:
                average_gradients(unwrap(net).parameters(), ctx)  # DDP did not (no_sync)
        out["grad_norm"] = float(nn.utils.clip_grad_norm_(unwrap(net).parameters(), grad_clip))
        own_ok = criterion is None or all(
            p.grad is None or bool(torch.isfinite(p.grad).all()) for p in criterion.parameters()
        )
        if not (math.isfinite(out["grad_norm"]) and own_ok):
            bad.append("gradient")
    if bad:
        optimizer.zero_grad(set_to_none=True)
        out["skipped"] = ", ".join(bad)
        return out
    if criterion is not None:
        criterion.before_step()
    optimizer.step()
    if criterion is not None:
        criterion.after_step()
    return out


def _no_sync(net: nn.Module, ctx: DistContext) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` with several ranks (the gradients are then averaged by hand)."""
    return net.no_sync() if ctx.is_distributed and hasattr(net, "no_sync") else \
        contextlib.nullcontext()


def _sidda_objective(method: SIDDAMethod, logits: Tensor, y_s: Tensor, z: Tensor, b: int,
                     ctx: DistContext, dist_cfg: DistConfig, out: dict,
                     bad: list, progress: float = 0.0) -> Tensor | None:
    """SIDDA's objective on the (gathered) batch, its values logged into ``out``; None when
    the latent distances overflow (a non-finite max distance, the same with one process as
    with several ranks; ``bad`` says so)."""
    res = distributed_sidda_loss(method.loss, logits[:b], y_s, z[:b], z[b:], ctx,
                                 da_scope=dist_cfg.da_scope)
    out["max_distance"] = res.max_distance
    if not math.isfinite(res.max_distance):
        bad.append("max distance")
        return None
    objective = method.weigh(res.ce, res.da, progress)  # paper variant: res.total, recomputed
    out.update(ce=res.ce.item(), da=res.da.item(), blur=res.blur, total=objective.item())
    return objective


def method_loss(
    method: DAMethod,
    z_s: Tensor,
    z_t: Tensor,
    logits_s: Tensor,
    logits_t: Tensor,
    y_s: Tensor,
    ctx: DistContext,
    *,
    progress: float = 0.0,
) -> MethodOutput:
    """A method's objective on the global batch, the same on every rank.

    One process evaluates ``method`` on its batch. Several ranks gather the latents, logits
    and labels of all ranks (with gradient: each rank gets back the gradient of its own rows)
    and every rank evaluates the method on the whole global batch, so the objective does not
    depend on the number of processes. Autocast is off; everything is cast to float32.
    """
    with _no_autocast(z_s.device):
        z_s, z_t, logits_s, logits_t = (t.float() for t in (z_s, z_t, logits_s, logits_t))
        if ctx.is_distributed:
            sizes = _gather_counts([len(z_s), len(z_t)], z_s.device)
            n_s, n_t = [s for s, _ in sizes], [t for _, t in sizes]
            z_s, logits_s = (gather_with_grad(t, ctx, sizes=n_s) for t in (z_s, logits_s))
            z_t, logits_t = (gather_with_grad(t, ctx, sizes=n_t) for t in (z_t, logits_t))
            y_s = gather_with_grad(y_s.double()[:, None], ctx, sizes=n_s)[:, 0].long()
        return method(StepOutputs(z_s=z_s, z_t=z_t, logits_s=logits_s, logits_t=logits_t,
                                  y_s=y_s, progress=progress))
