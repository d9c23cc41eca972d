r"""Diagnostics of how far apart the source and target latents are.

* :func:`paper_js_distance` - the authors' "JS distance" (their ``train_SIDDA.py``), kept so
  that figures can be compared with the paper. It is a heuristic, not a divergence between
  distributions: it pairs row i of the source batch with row i of the target batch, and treats
  each raw LayerNorm latent as if it were a probability vector (entries clamped to >= 1e-6,
  not normalised).
* :func:`fixed_blur_sinkhorn` - the debiased Sinkhorn divergence at a fixed blur: a proper
  two-sample distance between the two latent distributions, comparable across epochs and runs
  because its blur does not follow the batch geometry.
"""

from __future__ import annotations

from torch import Tensor

from sidda.losses import sinkhorn_divergence

__all__ = ["DIAGNOSTIC_BLUR", "fixed_blur_sinkhorn", "paper_js_distance"]

DIAGNOSTIC_BLUR = 1.0


def paper_js_distance(z_s: Tensor, z_t: Tensor, *, eps: float = 1e-6) -> Tensor:
    r"""The authors' paired-row JS distance, averaged over rows (NaN rows ignored).

    For each row pair :math:`(p, q)` after clamping to ``eps``:
    :math:`\mathrm{KL}(p, q) = \sum_d p_d \log(p_d / q_d)`, :math:`m = (p + q)/2`,
    :math:`\mathrm{JSD} = \tfrac12 \mathrm{KL}(p, m) + \tfrac12 \mathrm{KL}(q, m)`, distance
    :math:`\sqrt{\max(\mathrm{JSD}, 0)}`. Rows beyond the shorter batch are dropped (the
    authors' code crashes on unequal batches).

    Args:
        z_s: Source latents (B_s, D).
        z_t: Target latents (B_t, D).
        eps: Clamp floor.

    >>> import torch
    >>> float(paper_js_distance(torch.ones(3, 4), torch.ones(3, 4)))
    0.0
    """
    n = min(len(z_s), len(z_t))
    p = z_s[:n].float().clamp(min=eps)
    q = z_t[:n].float().clamp(min=eps)
    m = 0.5 * (p + q)
    kl_pm = (p * (p / m).log()).sum(1)
    kl_qm = (q * (q / m).log()).sum(1)
    d = (0.5 * kl_pm + 0.5 * kl_qm).clamp(min=0).sqrt()  # (n,)
    return d.nanmean()


def fixed_blur_sinkhorn(
    z_s: Tensor, z_t: Tensor, *, blur: float = DIAGNOSTIC_BLUR, max_points: int = 1024
) -> Tensor:
    """Sinkhorn divergence at a fixed blur on (at most ``max_points`` of) each latent set.

    The first ``max_points`` rows are used, so the value is deterministic for given inputs.
    """
    return sinkhorn_divergence(z_s[:max_points].float(), z_t[:max_points].float(), blur=blur)
