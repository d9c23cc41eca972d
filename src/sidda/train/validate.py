"""The validation pass that :func:`sidda.train.loop.fit` runs at the end of every epoch.

On the held-out source split: accuracy (``val_acc_s``) and cross-entropy (``val_ce``). For a
domain-adaptation method after the warm-up, the DA term of the training objective on
(source batch i, target batch i) pairs of validation latents (``val_da``,
:meth:`~sidda.methods.base.DAMethod.alignment`; SIDDA's is the Sinkhorn divergence at the
dynamic blur). Target images pass with the method's target BatchNorm statistics when it keeps
them (:meth:`~sidda.methods.base.DAMethod.target_stats`). Whenever target
validation images exist, the two alignment diagnostics of :mod:`sidda.alignment`
(``val_js_paper``, ``val_sinkhorn_fixed``). ``val_total = val_ce + val_da`` (unweighted, so
comparable across epochs). Target labels are never read; no random numbers are drawn.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sidda.alignment import fixed_blur_sinkhorn, paper_js_distance
from sidda.datasets import ImageSet, cycle_batches
from sidda.evaluate import forward_all
from sidda.methods import DAMethod, StepOutputs
from sidda.train.recovery import NonFiniteError

__all__ = ["validate"]


def _check_finite(z: Tensor, logits: Tensor, domain: str) -> None:
    """Stop a run whose validation outputs are NaN or inf: the weights have diverged, or the
    images hold values the network cannot take (e.g. pixels of 1e30)."""
    if not (torch.isfinite(z).all() and torch.isfinite(logits).all()):
        raise NonFiniteError(
            f"the {domain} validation latents or logits are NaN or inf: training diverged, or "
            "the images hold values far outside the usual range (check them with `sidda data "
            "check`); lower train.lr, tighten train.grad_clip, or rescale the images"
        )


@torch.no_grad()
def validate(
    model: nn.Module,
    val_s: ImageSet,
    val_t: ImageSet | None,
    *,
    criterion: DAMethod | None,
    with_da: bool,
    batch_size: int,
    device: torch.device,
) -> dict:
    """Source accuracy and CE; for a method after warm-up its DA term on batch pairs; always the
    two alignment diagnostics when target validation images exist. Target labels unused.
    Draws no random numbers (``eval()`` mode; a fixed-seed batch pairing)."""
    model.eval()
    z_s, logits = forward_all(model, val_s, batch_size=batch_size, device=device)
    _check_finite(z_s, logits, "source")
    y_s = val_s.y.to(device)
    out = {
        "val_acc_s": float((logits.argmax(1) == y_s).float().mean()),
        "val_ce": float(F.cross_entropy(logits, y_s)),
        "val_da": None,
    }
    if val_t is not None and len(val_t):
        with criterion.target_stats() if criterion is not None else contextlib.nullcontext():
            z_t, logits_t = forward_all(model, val_t, batch_size=batch_size, device=device)
        _check_finite(z_t, logits_t, "target")
        if with_da and criterion is not None:
            # the training objective's DA term on (source batch i, target batch i) pairs
            da = []
            stream = cycle_batches(len(z_t), batch_size, seed=0)
            for idx in torch.arange(len(z_s)).split(batch_size):
                jdx = next(stream)
                da.append(criterion.alignment(StepOutputs(
                    z_s=z_s[idx], z_t=z_t[jdx], logits_s=logits[idx], logits_t=logits_t[jdx],
                    y_s=y_s[idx], progress=1.0)))
            out["val_da"] = float(np.mean(da))
        out["val_js_paper"] = float(paper_js_distance(z_s, z_t))
        out["val_sinkhorn_fixed"] = float(fixed_blur_sinkhorn(z_s, z_t))
    out["val_total"] = out["val_ce"] + (out["val_da"] or 0.0)
    return out

