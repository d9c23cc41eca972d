r"""DANN: domain-adversarial training on the latents, through a gradient reversal layer.

Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks", JMLR 17(59). A domain
head :math:`D` (:class:`~sidda.methods.adversarial.DomainHead`, :math:`d \to 1024 \to 1024 \to
1`) reads the latent through the reversal layer :math:`R_\lambda`:

.. math::

    L = \mathrm{CE}(\text{logits}_s, y_s) + w\,L_D\big(D(R_\lambda(z_s)), D(R_\lambda(z_t))\big),
    \qquad \lambda(p) = \frac{2}{1 + e^{-10 p}} - 1,

with :math:`L_D` the binary cross-entropy (source = 1, target = 0, one logit, each domain
counting half) of :mod:`sidda.methods.adversarial`, and :math:`p` the fraction of the
alignment phase done. The head minimises :math:`L_D`; the encoder maximises
:math:`\lambda L_D`. ``da`` is :math:`L_D` (:math:`\log 2 \approx 0.693` at chance).
"""

from __future__ import annotations

from torch import Tensor

from sidda.methods.adversarial import AdversarialMethod
from sidda.methods.base import StepOutputs

__all__ = ["DANN"]


class DANN(AdversarialMethod):
    """Source cross-entropy plus ``weight`` times the domain loss of the reversed latents.

    Args:
        weight: Trade-off of the domain loss (the paper: 1).
        latent_dim: Width D of the latent, the head's input.
        num_classes: Unused (every method receives it).
        hidden: Hidden width of the domain head.
        dropout: Dropout of the domain head.
        gamma: Steepness of the reversal schedule (the paper: 10).
        domain_bn: One set of BatchNorm statistics per domain
            (:class:`~sidda.methods.base.DAMethod`).
    """

    name = "dann"

    def __init__(self, *, weight: float = 1.0, latent_dim: int = 256, num_classes: int = 3,
                 hidden: int = 1024, dropout: float = 0.5, gamma: float = 10.0,
                 domain_bn: bool = False) -> None:
        super().__init__(latent_dim, weight=weight, hidden=hidden, dropout=dropout, gamma=gamma,
                         domain_bn=domain_bn)

    def features(self, out: StepOutputs) -> tuple[Tensor, Tensor]:  # noqa: D102
        return out.z_s, out.z_t
