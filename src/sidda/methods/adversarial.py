r"""What DANN and CDAN share: the gradient reversal layer, its schedule, the domain head and the
domain-classification loss.

A domain head :math:`D` reads features :math:`f` (DANN: the latent; CDAN: a multilinear map of
the latent and the class probabilities) and outputs **one logit**, the log-odds that a row
comes from the source. Its loss is the binary cross-entropy with source = 1, target = 0, each
domain counting half whatever the batch sizes:

.. math::

    L_D = \tfrac12\,\frac{1}{B_s}\sum_i \log\big(1 + e^{-D(f_{s,i})}\big)
        + \tfrac12\,\frac{1}{B_t}\sum_j \log\big(1 + e^{D(f_{t,j})}\big).

The features pass through a gradient reversal layer :math:`R_\lambda` on their way to the head:
the identity forward, :math:`-\lambda\,\partial` backward. Minimising
:math:`\mathrm{CE} + w\,L_D(R_\lambda(f))` therefore trains the head to *minimise* :math:`L_D`
and the feature extractor to *maximise* :math:`\lambda L_D`, in one backward pass. The
coefficient ramps up over the alignment phase (Ganin et al. 2016, JMLR, section 5.2.2):

.. math::

    \lambda(p) = \frac{2}{1 + e^{-10 p}} - 1, \qquad p \in [0, 1].

One logit with a sigmoid (``binary_cross_entropy_with_logits``), never a softmax over one
output: the softmax of a single logit is 1 whatever the input, so its loss and its adversarial
gradient are identically zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sidda.methods.base import DAMethod, MethodOutput, StepOutputs

__all__ = [
    "AdversarialMethod",
    "DomainHead",
    "domain_accuracy",
    "domain_loss",
    "grl_coefficient",
    "reverse_gradient",
]


def grl_coefficient(progress: float, *, gamma: float = 10.0) -> float:
    r"""The reversal coefficient :math:`2 / (1 + e^{-\gamma p}) - 1` at progress ``p``.

    >>> [round(grl_coefficient(p), 4) for p in (0.0, 0.5, 1.0)]
    [0.0, 0.9866, 0.9999]
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:  # noqa: D102
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return -ctx.coeff * grad, None


def reverse_gradient(x: Tensor, coeff: float) -> Tensor:
    """``x`` unchanged; in the backward pass its gradient is multiplied by ``-coeff``.

    >>> x = torch.ones(2, requires_grad=True)
    >>> reverse_gradient(x, 0.5).sum().backward()
    >>> x.grad
    tensor([-0.5000, -0.5000])
    """
    return _GradientReversal.apply(x, float(coeff))


class DomainHead(nn.Module):
    """The domain classifier: ``in_features -> hidden -> hidden -> 1`` with ReLU and dropout.

    The usual setting of DANN's and CDAN's reproductions (1024 hidden units, dropout 0.5).

    Args:
        in_features: Width of the features it reads.
        hidden: Width of its two hidden layers.
        dropout: Dropout probability after each hidden layer.
    """

    def __init__(self, in_features: int, *, hidden: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        if in_features < 1 or hidden < 1:
            raise ValueError(f"domain head widths must be >= 1, got in_features {in_features} "
                             f"and hidden {hidden}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}; e.g. 0.5")
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, f: Tensor) -> Tensor:
        """Source log-odds: (B, in_features) -> (B,)."""
        return self.net(f).squeeze(1)


def domain_loss(d_s: Tensor, d_t: Tensor) -> Tensor:
    """Binary cross-entropy of the head's logits (source = 1, target = 0), each domain half.

    Args:
        d_s: Logits of the source rows, shape (B_s,).
        d_t: Logits of the target rows, shape (B_t,).

    >>> round(float(domain_loss(torch.zeros(3), torch.zeros(5))), 4)  # chance: log 2
    0.6931
    """
    return 0.5 * (F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
                  + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t)))


@torch.no_grad()
def domain_accuracy(d_s: Tensor, d_t: Tensor) -> float:
    """Balanced accuracy of the head (a logit > 0 says source), each domain half."""
    return 0.5 * (float((d_s > 0).float().mean()) + float((d_t <= 0).float().mean()))


class AdversarialMethod(DAMethod):
    """Source cross-entropy plus ``weight`` times the domain loss of reversed features.

    Subclasses build :attr:`head` and implement :meth:`features`. ``da`` is :math:`L_D` (what
    the head minimises and the features maximise); logs ``grl_coeff`` and ``domain_acc``.

    Args:
        in_features: Width of the features the head reads.
        weight: Trade-off of the domain loss.
        hidden: Hidden width of the head.
        dropout: Dropout of the head.
        gamma: Steepness of the reversal schedule (:func:`grl_coefficient`).
        domain_bn: One set of BatchNorm statistics per domain
            (:class:`~sidda.methods.base.DAMethod`).
    """

    def __init__(self, in_features: int, *, weight: float = 1.0, hidden: int = 1024,
                 dropout: float = 0.5, gamma: float = 10.0, domain_bn: bool = False) -> None:
        super().__init__(domain_bn=domain_bn)
        self.weight = float(weight)
        self.gamma = float(gamma)
        self.head = DomainHead(in_features, hidden=hidden, dropout=dropout)

    def features(self, out: StepOutputs) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """The head's input for the source and target rows, (B_s, F) and (B_t, F)."""
        raise NotImplementedError

    def forward(self, out: StepOutputs) -> MethodOutput:  # noqa: D102
        ce = F.cross_entropy(out.logits_s, out.y_s)
        coeff = grl_coefficient(out.progress, gamma=self.gamma)
        f_s, f_t = self.features(out)
        d = self.head(reverse_gradient(torch.cat([f_s, f_t]), coeff))  # (B_s + B_t,)
        d_s, d_t = d[: len(f_s)], d[len(f_s):]
        da = domain_loss(d_s, d_t)
        logs = {"grl_coeff": coeff, "domain_acc": domain_accuracy(d_s, d_t)}
        return MethodOutput(ce + self.weight * da, ce, da, logs)
