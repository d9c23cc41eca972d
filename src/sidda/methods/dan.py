r"""DAN: multi-kernel maximum mean discrepancy between the source and target latents.

Long et al. 2015, "Learning Transferable Features with Deep Adaptation Networks", ICML. The
alignment term is the squared MK-MMD of the two latent batches under a kernel that averages
:math:`M` Gaussians,

.. math::

    k(x, y) = \frac1M \sum_{m=1}^M \exp\Big(-\frac{\|x - y\|^2}{2\,\gamma_m\,\bar d}\Big),
    \qquad \bar d = \operatorname{sg}\Big[\frac{1}{n(n-1)}\sum_{i \ne j}\|w_i - w_j\|^2\Big],

where :math:`w = [z_s; z_t]` is the joint batch (:math:`n = B_s + B_t` points),
:math:`\operatorname{sg}` stops the gradient, and the multipliers are
:math:`\gamma \in \{2^{-3}, 2^{-2}, 2^{-1}, 2^0, 2^1\}` (bandwidths spread around the data
scale, equal weights :math:`1/M`, as in the common implementations; the paper learns the
weights, which the usual reproductions leave equal). The estimator is the *biased*
quadratic-time one (a V-statistic, diagonal terms kept):

.. math::

    \mathrm{MMD}^2 = \frac{1}{B_s^2}\sum_{i,i'} k(z_{s,i}, z_{s,i'})
        + \frac{1}{B_t^2}\sum_{j,j'} k(z_{t,j}, z_{t,j'})
        - \frac{2}{B_s B_t}\sum_{i,j} k(z_{s,i}, z_{t,j}),

the squared RKHS distance between the two empirical mean embeddings: it is >= 0, valid for any
:math:`B_s \ne B_t` (even a batch of one), and computed as :math:`w^\top K w` with
:math:`w_i = 1/B_s` on source rows and :math:`-1/B_t` on target rows. The paper's linear-time
estimator trades variance for speed, which a batch of 128 does not need.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from sidda.losses import check_latents
from sidda.methods.base import DAMethod, MethodOutput, StepOutputs

__all__ = ["DAN", "KERNEL_MULTIPLIERS", "mk_mmd"]

#: Bandwidth multipliers of the Gaussian kernels, relative to the mean squared distance.
KERNEL_MULTIPLIERS = (0.125, 0.25, 0.5, 1.0, 2.0)


def _square_distances(w: Tensor) -> Tensor:
    """Pairwise squared distances of the rows of ``w`` (n, D) -> (n, n), >= 0."""
    sq = (w * w).sum(1)  # (n,)
    return (sq[:, None] + sq[None, :] - 2 * w @ w.T).clamp_min(0)


def mk_mmd(z_s: Tensor, z_t: Tensor, *,
           multipliers: tuple[float, ...] = KERNEL_MULTIPLIERS) -> Tensor:
    r"""Biased squared multi-kernel MMD between two latent batches (module docstring).

    Args:
        z_s: Source latents, shape (B_s, D).
        z_t: Target latents, shape (B_t, D).
        multipliers: :math:`\gamma_m`, the kernels' squared bandwidths relative to the mean
            squared distance of the joint batch (detached).

    Returns:
        A 0-d tensor >= 0 (up to rounding), differentiable with respect to both batches.

    >>> z = torch.randn(6, 3)
    >>> float(mk_mmd(z, z)) < 1e-6
    True
    """
    check_latents(z_s, z_t)
    if not multipliers or min(multipliers) <= 0:
        raise ValueError(f"kernel multipliers must be > 0, got {multipliers}; e.g. (0.5, 1, 2)")
    b_s, b_t = len(z_s), len(z_t)
    w = torch.cat([z_s, z_t])  # (n, D)
    d2 = _square_distances(w)  # (n, n)
    n = b_s + b_t
    scale = (d2.detach().sum() / (n * (n - 1))).clamp_min(1e-12)  # mean over i != j
    kernel = sum(torch.exp(d2 / (-2.0 * m * scale)) for m in multipliers) / len(multipliers)
    weights = torch.cat([w.new_full((b_s,), 1.0 / b_s), w.new_full((b_t,), -1.0 / b_t)])
    return weights @ kernel @ weights


class DAN(DAMethod):
    """Source cross-entropy plus ``weight`` times the MK-MMD of the latents.

    Args:
        weight: Trade-off :math:`\\lambda` of the MMD term (the paper: 1).
        latent_dim, num_classes: Unused (every method receives them).
        multipliers: Bandwidth multipliers of the kernels (:data:`KERNEL_MULTIPLIERS`).
        domain_bn: One set of BatchNorm statistics per domain
            (:class:`~sidda.methods.base.DAMethod`).
    """

    name = "dan"

    def __init__(self, *, weight: float = 1.0, latent_dim: int = 256, num_classes: int = 3,
                 multipliers: tuple[float, ...] = KERNEL_MULTIPLIERS,
                 domain_bn: bool = False) -> None:
        super().__init__(domain_bn=domain_bn)
        self.weight = float(weight)
        self.multipliers = tuple(float(m) for m in multipliers)

    def forward(self, out: StepOutputs) -> MethodOutput:  # noqa: D102
        ce = F.cross_entropy(out.logits_s, out.y_s)
        da = mk_mmd(out.z_s, out.z_t, multipliers=self.multipliers)
        return MethodOutput(ce + self.weight * da, ce, da, {})
