r"""Diagnostics of how far apart the source and target latents are.

* :func:`paper_js_distance` - the authors' "JS distance" (their ``train_SIDDA.py``), kept so
  that figures can be compared with the paper. It is a heuristic, not a divergence between
  distributions: it pairs row i of the source batch with row i of the target batch, and treats
  each raw LayerNorm latent as if it were a probability vector (entries clamped to >= 1e-6,
  not normalised).
* :func:`fixed_blur_sinkhorn` - the debiased Sinkhorn divergence at a fixed blur: a proper
  two-sample distance between the two latent distributions, comparable across epochs and runs
  because its blur does not follow the batch geometry.
* :func:`gaussian_mmd2` - the unbiased squared maximum mean discrepancy (Gretton et al., 2012)
  with a Gaussian kernel :math:`k(x, y) = \exp(-\|x-y\|^2 / 2\sigma^2)`, bandwidth
  :math:`\sigma` the median distance between distinct points of the pooled sample (the median
  heuristic):

  .. math::
      \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i, x_j)
      + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i, y_j) - \frac{2}{mn}\sum_{i,j} k(x_i, y_j).

  Unbiased, so it can be slightly negative when the two samples come from one distribution.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from sidda.losses import sinkhorn_divergence

__all__ = ["DIAGNOSTIC_BLUR", "MMDEstimate", "fixed_blur_sinkhorn", "gaussian_mmd2",
           "paper_js_distance"]

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
    z_s: Tensor, z_t: Tensor, *, blur: float = DIAGNOSTIC_BLUR, max_points: int = 1024,
    backend: str = "auto",
) -> Tensor:
    """Sinkhorn divergence at a fixed blur on (at most ``max_points`` of) each latent set.

    The first ``max_points`` rows are used, so the value is deterministic for given inputs.
    ``backend`` as in :func:`~sidda.losses.sinkhorn_divergence` (for a forward pass at this
    blur on up to about a thousand points, ``"dense"`` is the fastest).
    """
    return sinkhorn_divergence(z_s[:max_points].float(), z_t[:max_points].float(), blur=blur,
                               backend=backend)


class MMDEstimate(NamedTuple):
    """The unbiased squared MMD and the kernel bandwidth it used."""

    mmd2: float  #: unbiased estimate of MMD^2 (may be slightly negative)
    bandwidth: float  #: sigma of the Gaussian kernel (median heuristic)


def gaussian_mmd2(z_s: Tensor, z_t: Tensor) -> MMDEstimate:
    """Unbiased squared MMD between two samples, Gaussian kernel, median-heuristic bandwidth.

    The bandwidth is the median distance over the distinct pairs of the pooled sample (the
    mean of the positive distances when more than half coincide). Quadratic in the number of
    points: subsample large sets first. Computed in float64.

    Args:
        z_s: (m, D) samples, m >= 2.
        z_t: (n, D) samples, n >= 2.

    Raises:
        ValueError: fewer than 2 points in a sample.

    >>> z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    >>> gaussian_mmd2(z, z + 3).mmd2 > 0.5 > abs(gaussian_mmd2(z[:25], z[25:]).mmd2)
    True
    """
    m, n = len(z_s), len(z_t)
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs >= 2 points per sample, got {m} and {n}")
    z = torch.cat([z_s, z_t]).double()  # (m + n, D)
    d2 = torch.cdist(z, z).square()  # (m + n, m + n)
    iu = torch.triu_indices(m + n, m + n, offset=1)
    dist = d2[iu[0], iu[1]].sqrt().numpy()  # the distinct pairs
    sigma = float(np.median(dist))
    if sigma <= 0:
        positive = dist[dist > 0]
        if not len(positive):
            return MMDEstimate(0.0, 0.0)  # every point is the same point
        sigma = float(positive.mean())
    k = torch.exp(-d2 / (2 * sigma**2))
    k_ss, k_tt, k_st = k[:m, :m], k[m:, m:], k[:m, m:]
    mmd2 = ((k_ss.sum() - k_ss.diagonal().sum()) / (m * (m - 1))
            + (k_tt.sum() - k_tt.diagonal().sum()) / (n * (n - 1))
            - 2 * k_st.mean())
    return MMDEstimate(float(mmd2), sigma)
