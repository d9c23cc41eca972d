r"""DeepJDOT: optimal transport of the joint (latent, label) distribution.

Damodaran et al. 2018, "DeepJDOT: Deep Joint Distribution Optimal Transport for Unsupervised
Domain Adaptation", ECCV. The cost of moving source sample :math:`i` onto target sample
:math:`j` joins the latent distance and the loss of the target prediction under the source
label:

.. math::

    C_{ij} = \alpha\,\frac{\|z_{s,i} - z_{t,j}\|^2}{s}
        + \lambda\,\mathrm{CE}\big(y_{s,i}, \text{logits}_{t,j}\big),
    \qquad s = \operatorname{sg}\Big[\frac{1}{B_s B_t}\sum_{ij}\|z_{s,i} - z_{t,j}\|^2\Big],

(``jdot_alpha`` :math:`= \alpha`, ``jdot_lambda`` :math:`= \lambda`). Dividing by the detached
mean squared distance :math:`s` makes the feature term scale-free (its batch mean is 1), so
:math:`\alpha = 1` weighs it like the label term, whatever the latent's scale (the paper
uses raw distances, with :math:`\alpha` tuned to the scale of its features).

The transport plan :math:`\gamma` solves the entropic problem with uniform marginals
:math:`a = \mathbf 1/B_s`, :math:`b = \mathbf 1/B_t`,

.. math::

    \gamma = \arg\min_{\gamma \mathbf 1 = a,\ \gamma^\top \mathbf 1 = b}
        \langle \gamma, C \rangle - \varepsilon H(\gamma),
    \qquad \varepsilon = \text{blur} \cdot \operatorname{sg}[\operatorname{mean}(C)],

by log-domain Sinkhorn iterations (:func:`entropic_plan`, which lives with sidda's other
Sinkhorn loops in :mod:`sidda._sinkhorn`): epsilon-scaling from the cost's range
down to :math:`\varepsilon` by the ratio ``scaling`` (one iteration per temperature), then
iterations at :math:`\varepsilon` until the row marginals are within ``tol`` (L1) of
:math:`a` (the column marginals are exact after every iteration). The plan is a constant for
the gradient (the paper's alternating scheme: :math:`\gamma` fixed, then a gradient step on the
network), and the alignment term is

.. math::

    L_\mathrm{JDOT} = \sum_{ij} \gamma_{ij} C_{ij},

differentiable with respect to both latents and the target logits.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from sidda._sinkhorn import entropic_plan
from sidda.losses import check_latents
from sidda.methods.base import DAMethod, MethodOutput, StepOutputs

__all__ = ["DeepJDOT", "entropic_plan", "jdot_cost"]


def jdot_cost(z_s: Tensor, z_t: Tensor, logits_t: Tensor, y_s: Tensor, *,
              alpha: float = 1.0, lam: float = 1.0) -> Tensor:
    """The joint cost matrix :math:`C` of the module docstring, (B_s, B_t).

    Args:
        z_s: Source latents, shape (B_s, D).
        z_t: Target latents, shape (B_t, D).
        logits_t: Target logits, shape (B_t, K).
        y_s: Source labels, shape (B_s,).
        alpha: Weight of the normalised squared latent distance.
        lam: Weight of the cross-entropy of the target predictions under the source labels.
    """
    check_latents(z_s, z_t)
    d2 = ((z_s * z_s).sum(1)[:, None] + (z_t * z_t).sum(1)[None, :]
          - 2 * z_s @ z_t.T).clamp_min(0)  # (B_s, B_t)
    scale = d2.detach().mean().clamp_min(1e-12)
    label = -F.log_softmax(logits_t, dim=1)[:, y_s].T  # (B_s, B_t): CE(y_s,i, logits_t,j)
    return alpha * d2 / scale + lam * label


class DeepJDOT(DAMethod):
    """Source cross-entropy plus ``weight`` times the joint transport cost of the batch.

    Args:
        weight: Trade-off of the transport term.
        jdot_alpha: :math:`\\alpha`, weight of the normalised latent distance.
        jdot_lambda: :math:`\\lambda`, weight of the target cross-entropy under source labels.
        blur: Entropic regularisation relative to the mean cost: epsilon is
            ``blur * mean(C)``.
        scaling: Epsilon-scaling ratio of the Sinkhorn loop.
        latent_dim, num_classes: Unused (every method receives them).
        tol: Marginal tolerance of the Sinkhorn loop (:func:`entropic_plan`).
        max_iter: Most Sinkhorn iterations at the final epsilon.
        domain_bn: One set of BatchNorm statistics per domain
            (:class:`~sidda.methods.base.DAMethod`).
    """

    name = "deepjdot"

    def __init__(self, *, weight: float = 1.0, jdot_alpha: float = 1.0, jdot_lambda: float = 1.0,
                 blur: float = 0.1, scaling: float = 0.9, latent_dim: int = 256,
                 num_classes: int = 3, tol: float = 1e-6, max_iter: int = 1000,
                 domain_bn: bool = False) -> None:
        super().__init__(domain_bn=domain_bn)
        if not blur > 0:
            raise ValueError(f"blur must be > 0, got {blur}; set loss.blur, e.g. 0.1")
        if not 0 < scaling < 1:
            raise ValueError(f"scaling must lie in (0, 1), got {scaling}; e.g. 0.9")
        self.weight, self.alpha, self.lam = float(weight), float(jdot_alpha), float(jdot_lambda)
        self.blur, self.scaling = float(blur), float(scaling)
        self.tol, self.max_iter = float(tol), int(max_iter)

    def forward(self, out: StepOutputs) -> MethodOutput:  # noqa: D102
        ce = F.cross_entropy(out.logits_s, out.y_s)
        cost = jdot_cost(out.z_s, out.z_t, out.logits_t, out.y_s, alpha=self.alpha,
                         lam=self.lam)  # (B_s, B_t)
        epsilon = max(self.blur * float(cost.detach().mean()), 1e-12)
        plan = entropic_plan(cost.detach(), epsilon=epsilon, scaling=self.scaling,
                             tol=self.tol, max_iter=self.max_iter)
        da = (plan * cost).sum()
        return MethodOutput(ce + self.weight * da, ce, da, {"epsilon": epsilon})
