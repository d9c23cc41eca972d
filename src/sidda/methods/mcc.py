r"""MCC: minimum class confusion on the target predictions.

Jin et al. 2020, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV. With the
target probabilities at temperature :math:`T`, :math:`\hat Y = \mathrm{softmax}(\text{logits}_t
/ T)` (:math:`B_t \times K`), their entropies :math:`H_i`, and the entropy weights

.. math::

    W = \operatorname{diag}(w), \qquad
    w_i = \frac{B_t\,(1 + e^{-H_i})}{\sum_{i'} (1 + e^{-H_{i'}})},

the class confusion is :math:`C = \hat Y^\top W \hat Y` (:math:`K \times K`), each row
normalised to sum 1, :math:`\tilde C_{jj'} = C_{jj'} / \sum_{j''} C_{jj''}`, and

.. math::

    L_\mathrm{MCC} = \frac1K \sum_{j}\sum_{j' \ne j} \tilde C_{jj'}
        = \frac{\sum \tilde C - \operatorname{tr} \tilde C}{K}.

As in the authors' code the entropy weights are detached (they weigh samples; no gradient
flows through them) and the entropies are those of the temperature-scaled probabilities. The
authors' code divides by the row sums with a broadcast that normalises *columns*; this module
normalises rows, as the paper writes. :math:`C` is symmetric, so the column-normalised matrix
is the transpose of the row-normalised one: same sum, same trace, the same loss. Only the
target logits are used: the source enters through the cross-entropy alone.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from sidda.methods.base import DAMethod, MethodOutput, StepOutputs

__all__ = ["MCC", "class_confusion"]


def class_confusion(logits_t: Tensor, *, temperature: float = 2.5) -> Tensor:
    r"""The MCC loss of a batch of target logits (module docstring).

    Args:
        logits_t: Target logits, shape (B_t, K).
        temperature: Softmax temperature :math:`T > 0` (the paper: 2.5).

    Returns:
        A 0-d tensor in [0, 1), differentiable with respect to the logits.

    >>> confident = torch.tensor([[50.0, 0.0], [0.0, 50.0]])  # no confusion
    >>> float(class_confusion(confident, temperature=1.0)) < 1e-6
    True
    """
    if logits_t.ndim != 2 or len(logits_t) == 0:
        raise ValueError(f"logits_t must be (B_t, K) with B_t >= 1, got {tuple(logits_t.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; MCC uses 2.5")
    b, k = logits_t.shape
    log_p = F.log_softmax(logits_t / temperature, dim=1)  # (B_t, K)
    p = log_p.exp()
    with torch.no_grad():
        weight = 1 + torch.exp((p * log_p).sum(1))  # 1 + exp(-H), (B_t,)
        weight = b * weight / weight.sum()
    confusion = (p * weight[:, None]).T @ p  # (K, K)
    confusion = confusion / confusion.sum(1, keepdim=True).clamp_min(1e-30)  # rows sum to 1
    return (confusion.sum() - confusion.trace()) / k


class MCC(DAMethod):
    """Source cross-entropy plus ``weight`` times the class confusion of the target.

    Args:
        weight: Trade-off :math:`\\mu` of the MCC term (the paper: 1).
        temperature: Softmax temperature (the paper: 2.5).
        latent_dim, num_classes: Unused (every method receives them).
        domain_bn: One set of BatchNorm statistics per domain
            (:class:`~sidda.methods.base.DAMethod`).
    """

    name = "mcc"

    def __init__(self, *, weight: float = 1.0, temperature: float = 2.5, latent_dim: int = 256,
                 num_classes: int = 3, domain_bn: bool = False) -> None:
        super().__init__(domain_bn=domain_bn)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; MCC uses 2.5")
        self.weight = float(weight)
        self.temperature = float(temperature)

    def forward(self, out: StepOutputs) -> MethodOutput:  # noqa: D102
        ce = F.cross_entropy(out.logits_s, out.y_s)
        da = class_confusion(out.logits_t, temperature=self.temperature)
        return MethodOutput(ce + self.weight * da, ce, da, {})
