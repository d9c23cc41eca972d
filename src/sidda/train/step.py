"""One optimisation step of a domain-adaptation method or of the source-only baseline.

:func:`train_step` is what :func:`sidda.train.loop.fit` runs for every batch, and what
``benchmarks/gpu_step.py`` times. It knows no method by name: the method
(:class:`~sidda.methods.base.DAMethod`) makes its forward passes
(:meth:`~sidda.methods.base.DAMethod.forward_passes`: one on ``cat([x_s, x_t])``, or one per
domain with domain-specific BatchNorm statistics) under bf16 autocast on CUDA
(:func:`~sidda.train.device.autocast_context`); :func:`method_loss` evaluates the method on
the split latents and logits in float32, gathered over the ranks; then the step
backpropagates, averages the method's own gradients over the ranks, clips the model gradients
and steps. A warm-up or baseline step does the same with the cross-entropy alone.

**Non-finite steps.** A non-finite latent, loss or gradient skips the update: the gradients
are dropped, neither the optimizer nor the method's parameters move, and ``skipped`` names
what was non-finite (``latents``, what the method reports, e.g. SIDDA's ``max distance``
when the latent distances overflow, ``CE``, ``DA``, ``total``, ``gradient``). With several
ranks every such decision is the same on every rank (the latents' check is agreed with
:func:`~sidda.train.collectives.max_over_ranks`; the method sees the same gathered batch on
every rank, so its losses and the clipped gradients are equal everywhere), so that no rank
waits in a collective that another one skipped.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from sidda.methods.base import DAMethod, MethodOutput, StepOutputs
from sidda.train.collectives import (
    DistContext,
    _gather_counts,
    average_gradients,
    gather_with_grad,
    max_over_ranks,
)
from sidda.train.config import DistConfig
from sidda.train.device import _no_autocast, autocast_context
from sidda.train.distributed import distributed_cross_entropy, unwrap

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
        dist_cfg: bf16 autocast (None: the defaults).
        progress: Fraction of the alignment phase done, in [0, 1] (method schedules).

    Returns:
        The logged values, keyed by :data:`STEP_KEYS` plus the method's own logs, the same on
        every rank. ``skipped`` names what was non-finite (``latents``, what the method
        reported, e.g. ``max distance``, ``CE``, ``DA``, ``total``, ``gradient``), or is None
        for a normal step.
    """
    ctx, dist_cfg = ctx or DistContext(device=x_s.device), dist_cfg or DistConfig()
    optimizer.zero_grad(set_to_none=True)
    out: dict = dict.fromkeys(STEP_KEYS)
    bad, objective = [], None
    autocast = autocast_context(ctx.device, enabled=dist_cfg.bf16)  # the forward pass only
    if x_t is not None:
        # several passes (one per domain): DDP cannot reduce them; averaged by hand below
        passes = contextlib.nullcontext() if criterion.single_pass else _no_sync(net, ctx)
        with autocast, passes:
            fwd = criterion.forward_passes(net, x_s, x_t)  # (B_s, D), (B_t, D), ..., (B_t, K)
        finite = bool(torch.isfinite(fwd.z_s).all()) and bool(torch.isfinite(fwd.z_t).all())
        if max_over_ranks(not finite, ctx):
            bad.append("latents")
        else:
            res = method_loss(criterion, *fwd, y_s, ctx, progress=progress)
            out.update(res.logs)
            if res.skip is not None:  # e.g. overflowing latent distances: nothing to descend
                bad.append(res.skip)
            else:
                objective = res.total
                out.update(ce=res.ce.item(), da=res.da.item(), total=objective.item())
        if objective is None:
            with torch.no_grad():
                out["ce"] = distributed_cross_entropy(fwd.logits_s.detach(), y_s, ctx).item()
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
            if x_t is not None and not criterion.single_pass:
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
    depend on the number of processes, and a method with state (SIDDA's etas) updates it
    alike on every rank. Autocast is off; everything is cast to float32.

    Args:
        method: The domain-adaptation method.
        z_s, z_t: This rank's source and target latents, (b_s, D) and (b_t, D).
        logits_s, logits_t: Their logits, (b_s, K) and (b_t, K).
        y_s: This rank's source labels, (b_s,).
        ctx: The distributed context.
        progress: Fraction of the alignment phase done (:class:`StepOutputs`).
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
