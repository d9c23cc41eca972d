"""One optimisation step of SIDDA or of the source-only baseline, on one rank or several.

:func:`train_step` is what :func:`sidda.train.fit` runs for every batch, and what
``benchmarks/gpu_step.py`` times. A SIDDA step makes one forward pass on ``cat([x_s, x_t])``
(bf16 autocast on CUDA, :func:`~sidda.distributed.autocast_context`), computes
:class:`~sidda.losses.SIDDALoss` in float32 (:func:`~sidda.distributed.distributed_sidda_loss`),
backpropagates, averages the etas' gradients over the ranks, clips the model gradients and
steps; a warm-up or baseline step does the same with the cross-entropy alone.

**Non-finite steps.** A non-finite latent, loss or gradient skips the update: the gradients
are dropped, neither the optimizer nor the etas move, and ``skipped`` names what was
non-finite. With several ranks every such decision is the same on every rank (the latents'
check is agreed with :func:`~sidda.distributed.max_over_ranks`; the losses and the clipped
gradients are already equal everywhere), so that no rank waits in a collective that another
one skipped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sidda.distributed import (
    DistConfig,
    DistContext,
    autocast_context,
    average_gradients,
    distributed_cross_entropy,
    distributed_sidda_loss,
    max_over_ranks,
    unwrap,
)
from sidda.losses import SIDDALoss, max_cross_distance

__all__ = ["STEP_KEYS", "train_step"]

#: The values :func:`train_step` returns (None where they do not apply).
STEP_KEYS = ("ce", "da", "blur", "max_distance", "total", "grad_norm", "skipped")


def train_step(
    net: nn.Module,
    x_s: Tensor,
    y_s: Tensor,
    x_t: Tensor | None,
    *,
    criterion: SIDDALoss | None,
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    ctx: DistContext | None = None,
    dist_cfg: DistConfig | None = None,
) -> dict:
    """One step on a source batch, and a target batch after the warm-up (``x_t``, else None).

    Args:
        net: The model (returning ``(latent, logits)``), in DDP with several ranks.
        x_s: This rank's source images, shape (b_s, C, H, W), on its device.
        y_s: Their labels, shape (b_s,).
        x_t: This rank's target images, shape (b_t, C, H, W), or None for cross-entropy alone.
        criterion: The SIDDA loss (with its etas, stepped by ``optimizer`` too); None only for
            cross-entropy steps.
        optimizer: Steps the model parameters (and the etas).
        grad_clip: Max norm of the model gradients (the etas are not clipped).
        ctx: This process's rank and device (None: one process).
        dist_cfg: bf16 autocast and the Sinkhorn scope (None: the defaults).

    Returns:
        The logged values, keyed by :data:`STEP_KEYS`, the same on every rank. ``skipped``
        names what was non-finite (``latents``, ``max distance``, ``CE``, ``DA``, ``total``,
        ``gradient``), or is None for a normal step.
    """
    ctx, dist_cfg = ctx or DistContext(device=x_s.device), dist_cfg or DistConfig()
    optimizer.zero_grad(set_to_none=True)
    out: dict = dict.fromkeys(STEP_KEYS)
    bad, objective = [], None
    autocast = autocast_context(ctx.device, enabled=dist_cfg.bf16)  # the forward pass only
    if x_t is not None:
        b = len(x_s)
        with autocast:
            z, logits = net(torch.cat([x_s, x_t]))  # (B_s + B_t, D), (B_s + B_t, K)
        if max_over_ranks(not bool(torch.isfinite(z).all()), ctx):
            bad.append("latents")
        else:
            try:
                res = distributed_sidda_loss(criterion, logits[:b], y_s, z[:b], z[b:], ctx,
                                             da_scope=dist_cfg.da_scope)
            except ValueError:  # one process: no finite blur, the latent distances overflow
                out["max_distance"] = max_cross_distance(z[:b], z[b:])
                if math.isfinite(out["max_distance"]):
                    raise
                bad.append("max distance")
            else:  # several ranks report the overflow as an infinite max distance instead
                out["max_distance"] = res.max_distance
                if math.isfinite(res.max_distance):
                    objective = res.total
                    out.update(ce=res.ce.item(), da=res.da.item(), blur=res.blur,
                               total=objective.item())
                else:
                    bad.append("max distance")
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
        out["grad_norm"] = float(nn.utils.clip_grad_norm_(unwrap(net).parameters(), grad_clip))
        etas_ok = criterion is None or all(
            p.grad is None or bool(torch.isfinite(p.grad).all()) for p in criterion.parameters()
        )
        if not (math.isfinite(out["grad_norm"]) and etas_ok):
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
