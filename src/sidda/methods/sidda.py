r"""SIDDA as a :class:`~sidda.methods.base.DAMethod`: the paper's computation and a robust variant.

``variant="paper"`` is :class:`~sidda.losses.SIDDALoss` unchanged (Pandya et al. 2025,
arXiv:2501.14048):

.. math::

    L = \frac{\mathrm{CE}}{2\eta_1^2} + \frac{S_{\varepsilon(z)}(z_s, z_t)}{2\eta_2^2}
        + \log(\eta_1\eta_2), \qquad \eta_1 = \eta_2 = 1 \text{ at the start},
        \quad \eta_2 \ge \tfrac14 \eta_1 .

``variant="robust"`` keeps the objective's form and changes what our experiments on the shapes
showed to merge classes (docs/method.md, "Robust SIDDA"):

1. **Domain-specific BatchNorm statistics.** Source and target batches go through the network
   in separate passes, each normalised with its own domain's batch statistics, and a second
   set of running statistics is kept for the target
   (:class:`~sidda.methods.domain_bn.DomainStats`) and used when predicting the target. With
   one concatenated pass the target's noise statistics shift the source features at the switch
   from the warm-up (the "BatchNorm shock").
2. **The etas start where they would settle.** At the first alignment step,
   :math:`\eta_1^2 = \mathrm{CE}` and :math:`\eta_2^2 = \mathrm{DA}` (the stationary point of
   the objective in the etas), instead of 1 and 1. With the paper's start the DA term (tens,
   against a CE of a few hundredths) dominates for the hundreds of steps that AdamW needs to
   move :math:`\eta_2` from 1 to its stationary value, and those steps merge classes.
3. **Alignment never outweighs classification.** :math:`\eta_2 \ge \eta_1`, so the DA weight
   :math:`1/(2\eta_2^2)` is at most the CE weight (the paper allows 16 times).
4. **Clean eta updates and a softer blur.** The bounds hold after every step, the etas get no
   weight decay (``eta_mode="clean"``), and the dynamic blur is ``0.2 * max distance``
   (``blur_factor``; the paper's 0.05), which matches clusters rather than single points.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sidda.losses import ETA_1_MIN, SIDDALoss
from sidda.methods.base import DAMethod, MethodOutput, StepOutputs
from sidda.methods.domain_bn import DomainStats

__all__ = ["SIDDAMethod"]

#: Dynamic blur factor of the robust variant (the paper's is 0.05).
ROBUST_BLUR_FACTOR = 0.2
#: eta_2 / eta_1 lower bound of the robust variant (DA weight <= CE weight).
ROBUST_RATIO_MIN = 1.0


class SIDDAMethod(DAMethod):
    """SIDDA's objective for the training loop.

    Args:
        variant: ``"paper"`` or ``"robust"`` (module docstring).
        eta_mode: ``"faithful"`` or ``"clean"`` (:class:`~sidda.losses.SIDDALoss`); the robust
            variant always updates the etas the clean way.
        blur, blur_factor, blur_floor, scaling, backend: The Sinkhorn options of
            :class:`~sidda.losses.SIDDALoss`; ``blur_factor`` defaults to the variant's
            (paper 0.05, robust 0.2).
        latent_dim, num_classes: Unused (every method receives them).
        eta_ratio_min: Override of the variant's ``eta_2 / eta_1`` lower bound.
        stationary_init: Override of the variant's eta initialisation (True: at the first
            alignment step, from that step's CE and DA).
        domain_bn: Override of the variant's BatchNorm statistics (True: one set per domain,
            :class:`~sidda.methods.domain_bn.DomainStats`).
    """

    name = "sidda"

    def __init__(
        self,
        *,
        variant: str = "paper",
        eta_mode: str = "faithful",
        blur: float | None = None,
        blur_factor: float | None = None,
        blur_floor: float = 0.01,
        scaling: float = 0.9,
        backend: str = "auto",
        latent_dim: int = 256,
        num_classes: int = 3,
        eta_ratio_min: float | None = None,
        stationary_init: bool | None = None,
        domain_bn: bool | None = None,
    ) -> None:
        super().__init__()
        if variant not in ("paper", "robust"):
            raise ValueError(f"variant must be 'paper' or 'robust', got {variant!r}")
        robust = variant == "robust"
        self.variant = variant
        if eta_ratio_min is None:
            eta_ratio_min = ROBUST_RATIO_MIN if robust else 0.25
        self.stationary_init = robust if stationary_init is None else stationary_init
        if blur_factor is None:
            blur_factor = ROBUST_BLUR_FACTOR if robust else 0.05
        self.loss = SIDDALoss(
            mode="clean" if robust else eta_mode, blur=blur, blur_factor=blur_factor,
            blur_floor=blur_floor, scaling=scaling, backend=backend,
            eta_ratio_min=eta_ratio_min,
        )
        self.domain_bn = robust if domain_bn is None else domain_bn
        self.domain_stats = DomainStats() if self.domain_bn else None
        # whether the etas were set from a first alignment step (saved with the checkpoint)
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def attach(self, model: nn.Module) -> None:
        """Bind the target BatchNorm statistics to ``model`` (domain-specific BatchNorm)."""
        if self.domain_stats is not None:
            self.domain_stats.attach(model)

    def param_groups(self) -> list[dict]:  # noqa: D102
        return [self.loss.param_group()]

    def before_step(self) -> None:  # noqa: D102
        self.loss.before_step()

    def after_step(self) -> None:  # noqa: D102
        self.loss.after_step()

    def log_state(self) -> dict:  # noqa: D102
        return {"eta_1": self.loss.eta_1.item(), "eta_2": self.loss.eta_2.item()}

    @torch.no_grad()
    def start_from(self, ce: float, da: float) -> None:
        """Set the etas to their stationary values for these CE and DA (once per run)."""
        if bool(self.started) or not self.stationary_init:
            return
        if math.isfinite(ce) and math.isfinite(da):
            e1 = max(math.sqrt(max(ce, 0.0)), ETA_1_MIN)
            self.loss.eta_1.fill_(e1)
            self.loss.eta_2.fill_(max(math.sqrt(max(da, 0.0)), self.loss.eta_ratio_min * e1))
            self.started.fill_(True)

    def weigh(self, ce: Tensor, da: Tensor) -> Tensor:
        """The weighted objective for this step's CE and DA (0-d tensors); the robust variant
        first sets the etas to their stationary values, once, at its first alignment step."""
        self.start_from(ce.item(), da.item())
        return self.loss.weigh(ce, da)

    def forward(self, out: StepOutputs) -> MethodOutput:  # noqa: D102
        res = self.loss(out.logits_s, out.y_s, out.z_s, out.z_t)
        total = self.weigh(res.ce, res.da)
        return MethodOutput(total, res.ce, res.da, {
            "blur": res.blur, "max_distance": res.max_distance,
            "eta_1": self.loss.eta_1.item(), "eta_2": self.loss.eta_2.item(),
        })
