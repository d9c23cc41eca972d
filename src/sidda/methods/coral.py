r"""Deep CORAL: match the second-order statistics of the source and target latents.

Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV
workshops. With :math:`d` the latent width and unbiased covariances

.. math::

    C_s = \frac{1}{B_s - 1}\big(z_s^\top z_s - \tfrac{1}{B_s}(\mathbf 1^\top z_s)^\top
        (\mathbf 1^\top z_s)\big), \qquad C_t \text{ likewise},

the alignment term is

.. math::

    L_\mathrm{CORAL} = \frac{1}{4 d^2}\,\|C_s - C_t\|_F^2 .

A batch of a single latent has no unbiased covariance; it gets the zero matrix (denominator
:math:`\max(B - 1, 1)`), so that a last source batch of one image does not stop a run.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from sidda.losses import check_latents
from sidda.methods.base import DAMethod, MethodOutput, StepOutputs

__all__ = ["DeepCORAL", "coral"]


def _covariance(z: Tensor) -> Tensor:
    """Unbiased covariance of the rows of ``z`` (B, D) -> (D, D); zero for B = 1."""
    zc = z - z.mean(0, keepdim=True)
    return zc.T @ zc / max(len(z) - 1, 1)


def coral(z_s: Tensor, z_t: Tensor) -> Tensor:
    r"""The CORAL distance :math:`\|C_s - C_t\|_F^2 / (4 d^2)` (module docstring).

    Args:
        z_s: Source latents, shape (B_s, D).
        z_t: Target latents, shape (B_t, D).

    >>> import torch
    >>> z = torch.randn(5, 3)
    >>> float(coral(z, z + 1.0)) < 1e-10  # a shift leaves the covariance alone
    True
    """
    check_latents(z_s, z_t)
    d = z_s.shape[1]
    diff = _covariance(z_s) - _covariance(z_t)  # (D, D)
    return (diff * diff).sum() / (4 * d * d)


class DeepCORAL(DAMethod):
    """Source cross-entropy plus ``weight`` times the CORAL distance of the latents.

    Args:
        weight: Trade-off :math:`\\lambda` of the CORAL term.
        latent_dim, num_classes: Unused (every method receives them).
        domain_bn: One set of BatchNorm statistics per domain
            (:class:`~sidda.methods.base.DAMethod`).
    """

    name = "coral"

    def __init__(self, *, weight: float = 1.0, latent_dim: int = 256,
                 num_classes: int = 3, domain_bn: bool = False) -> None:
        super().__init__(domain_bn=domain_bn)
        self.weight = float(weight)

    def forward(self, out: StepOutputs) -> MethodOutput:  # noqa: D102
        ce = F.cross_entropy(out.logits_s, out.y_s)
        da = coral(out.z_s, out.z_t)
        return MethodOutput(ce + self.weight * da, ce, da, {})
