r"""CDAN: conditional domain-adversarial training on the multilinear map of latent and predictions.

Long et al. 2018, "Conditional Adversarial Domain Adaptation", NeurIPS. The domain head reads
the outer product of the latent :math:`z \in \mathbb R^d` and the class probabilities
:math:`g = \mathrm{softmax}(\text{logits}) \in \mathbb R^K`, flattened:

.. math::

    T_\otimes(z, g) = \operatorname{vec}(z \otimes g) \in \mathbb R^{dK},
    \qquad (z \otimes g)_{ak} = z_a\,g_k .

When :math:`dK` exceeds 4096 it uses the randomized multilinear map instead, with fixed random
Gaussian matrices :math:`R_f \in \mathbb R^{d \times d_o}`, :math:`R_g \in \mathbb R^{K \times
d_o}` (:math:`d_o = 1024`, buffers: saved in the ``state_dict``, drawn from ``seed``):

.. math::

    T_\odot(z, g) = \frac{(z R_f) \odot (g R_g)}{\sqrt{d_o}} .

The objective is DANN's (:mod:`sidda.methods.dann`) with these features: the reversal layer
with :math:`\lambda(p) = 2/(1 + e^{-10p}) - 1`, a one-logit head with the binary
cross-entropy, each domain half. As in the authors' code and tllib, :math:`g` is **detached**:
the adversarial gradient reaches the encoder through :math:`z` only, not through the
classifier's predictions. sidda's ``cnn`` (:math:`d = 256`, :math:`K = 3`) uses the full map
(768 features). The entropy conditioning of CDAN+E is not included.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sidda.methods.adversarial import AdversarialMethod
from sidda.methods.base import StepOutputs

__all__ = ["CDAN", "MAX_FULL_DIM", "multilinear_map", "randomized_multilinear_map"]

#: Largest d * K that gets the full multilinear map; above it the randomized one is used.
MAX_FULL_DIM = 4096


def multilinear_map(z: Tensor, g: Tensor) -> Tensor:
    """Flattened outer products of the rows: (B, d), (B, K) -> (B, d * K), index ``a * K + k``.

    >>> multilinear_map(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0, 5.0]]))
    tensor([[ 3.,  4.,  5.,  6.,  8., 10.]])
    """
    return (z[:, :, None] * g[:, None, :]).flatten(1)


def randomized_multilinear_map(z: Tensor, g: Tensor, r_f: Tensor, r_g: Tensor) -> Tensor:
    """``(z @ r_f) * (g @ r_g) / sqrt(d_o)``: (B, d), (B, K), (d, d_o), (K, d_o) -> (B, d_o)."""
    return (z @ r_f) * (g @ r_g) / math.sqrt(r_f.shape[1])


class CDAN(AdversarialMethod):
    """Source cross-entropy plus ``weight`` times the domain loss of the reversed multilinear map.

    Args:
        weight: Trade-off of the domain loss (the paper: 1).
        latent_dim: Width d of the latent.
        num_classes: Number of classes K.
        hidden: Hidden width of the domain head.
        dropout: Dropout of the domain head.
        gamma: Steepness of the reversal schedule (the paper: 10).
        random_dim: :math:`d_o`, output width of the randomized map.
        max_full_dim: Largest d * K that gets the full map.
        seed: Seed of the random matrices of the randomized map.
        domain_bn: One set of BatchNorm statistics per domain
            (:class:`~sidda.methods.base.DAMethod`).
    """

    name = "cdan"

    def __init__(self, *, weight: float = 1.0, latent_dim: int = 256, num_classes: int = 3,
                 hidden: int = 1024, dropout: float = 0.5, gamma: float = 10.0,
                 random_dim: int = 1024, max_full_dim: int = MAX_FULL_DIM, seed: int = 0,
                 domain_bn: bool = False) -> None:
        randomized = latent_dim * num_classes > max_full_dim
        width = random_dim if randomized else latent_dim * num_classes
        super().__init__(width, weight=weight, hidden=hidden, dropout=dropout, gamma=gamma,
                         domain_bn=domain_bn)
        self.randomized = randomized
        if randomized:
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("r_f", torch.randn(latent_dim, random_dim, generator=gen))
            self.register_buffer("r_g", torch.randn(num_classes, random_dim, generator=gen))

    def conditional_map(self, z: Tensor, logits: Tensor) -> Tensor:
        """The head's input for latents (B, d) and logits (B, K); the softmax is detached."""
        g = torch.softmax(logits, dim=1).detach()
        if self.randomized:
            return randomized_multilinear_map(z, g, self.r_f, self.r_g)
        return multilinear_map(z, g)

    def features(self, out: StepOutputs) -> tuple[Tensor, Tensor]:  # noqa: D102
        return (self.conditional_map(out.z_s, out.logits_s),
                self.conditional_map(out.z_t, out.logits_t))
