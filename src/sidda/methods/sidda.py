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
   from the warm-up (the "BatchNorm shock"). This is ``loss.domain_bn``, an option of every
   method (:class:`~sidda.methods.base.DAMethod`); on by default for the robust variant only.
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

5. **The stationary start over a window** (``stationary_window``, 0.05 by default): for the
   first fraction ``w`` of the alignment phase the etas are held at the stationary values of
   the *mean* CE and DA of the steps so far (:math:`\eta_1^2 = \overline{\mathrm{CE}}`,
   :math:`\eta_2^2 = \overline{\mathrm{DA}}`), and learned from then on. Why: the first
   step's DA is the unaligned transient (30-40 on the shapes) and falls to about 1 within one
   or two epochs, while AdamW moves :math:`\eta_2` by about the learning rate per step, so an
   :math:`\eta_2` started at :math:`\sqrt{\mathrm{DA}_0} \approx 6` stays near 5 for the
   whole run and the DA weight sits an order of magnitude below the objective's stationary
   point (measured in the runs' histories). ``w = 0.05`` is the first alignment epoch of a
   20-epoch alignment phase. Measured over four shifts and three seeds it closes at least half
   of the shapes' gap on every seed, gains on MNIST-M with blur on every seed and costs half a
   point on the astronomical objects; on MNIST-M with noise it leaves the network
   underconfident (target ECE 0.14), which the source-fitted temperature corrects (0.03)
   (docs/results.md). ``stationary_window=0`` sets the etas once, from the first alignment
   step (the earlier robust variant).

An option of the robust variant, off by default (``da_ramp="none"``):

6. **A ramped alignment weight** (``da_ramp="dann"``): the DA term is multiplied by DANN's
   schedule (Ganin et al. 2016) over the alignment phase,

   .. math::

       \lambda(p) = \frac{2}{1 + e^{-10 p}} - 1, \qquad
       L = \frac{\mathrm{CE}}{2\eta_1^2} + \lambda(p)\,\frac{S_{\varepsilon(z)}}{2\eta_2^2}
           + \log(\eta_1\eta_2),

   with :math:`p` the fraction of the alignment phase done (0 at the first step after the
   warm-up, 1 at the end; :math:`\lambda(0) = 0`, :math:`\lambda(0.1) = 0.46`,
   :math:`\lambda(0.3) = 0.91`, :math:`\lambda(1) = 0.99991`). Why: at the switch the DA
   term is tens and falls to about 1 within the first alignment epoch, at the full learning
   rate; that first epoch is where the marginal alignment matches target clusters to source
   classes, and the ramp makes it proceed while the cross-entropy keeps the classes apart. The
   stationary start uses the *unramped* DA (:math:`\eta_2^2 = \mathrm{DA}`), the value the
   term settles to once
   :math:`\lambda \approx 1`; starting from :math:`\lambda(0)\,\mathrm{DA} = 0` would put
   :math:`\eta_2` at its lower bound and the full-weight term, a few epochs later, at up to the
   CE weight times tens, the paper's failure. AdamW moves the etas by about the learning rate per
   step whatever the scale of the term, so the ramp barely changes their path; it scales the
   alignment gradient. It lost on the shapes (docs/results.md, "What else we tried").

7. **Class-aware alignment** (``label_cost`` :math:`\lambda`, 0.5 by default; 0 turns it off):
   each latent carries its class, the one-hot source label or the target softmax :math:`p_j`,
   scaled by
   :math:`c = \lambda D/\sqrt 2` with :math:`D` the largest source-target latent distance of
   the batch (no gradient):

   .. math::

       a_i = (z_{s,i},\ c\,e_{y_i}), \qquad b_j = (z_{t,j},\ c\,p_j), \qquad
       \tfrac12\lVert a_i - b_j\rVert^2 = \tfrac12\lVert z_{s,i} - z_{t,j}\rVert^2
           + \tfrac{\lambda^2 D^2}{4}\lVert e_{y_i} - p_j\rVert^2 ,

   and the DA term is :math:`S_\varepsilon(a, b)` at the dynamic blur of the latents. Two
   confident points of different classes are :math:`\lambda D` apart in the label coordinates,
   so the transport prefers partners of the same class (a joint distribution optimal
   transport in the sense of DeepJDOT, Damodaran et al. 2018, inside SIDDA's divergence and
   weighting); the gradient through :math:`p_j` trains the classifier on the target towards
   the labels of its partners, and a target whose predictions leave the source's class
   balance pays for it (the transport has equal masses).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from sidda.losses import BLUR_FACTOR, ETA_1_MIN, SIDDALoss, max_cross_distance
from sidda.methods.base import DAMethod, MethodOutput, StepOutputs

__all__ = ["DA_RAMPS", "SIDDAMethod", "dann_ramp"]

#: Dynamic blur factor of the robust variant (the paper's is 0.05).
ROBUST_BLUR_FACTOR = 0.2
#: eta_2 / eta_1 lower bound of the robust variant (DA weight <= CE weight).
ROBUST_RATIO_MIN = 1.0
#: Fraction of the alignment phase over which the robust variant holds the etas at the
#: stationary values of the mean CE and DA (``stationary_window``).
ROBUST_STATIONARY_WINDOW = 0.05
#: Class-aware alignment of the robust variant (``label_cost``, module docstring, 7).
ROBUST_LABEL_COST = 0.5
#: Schedules of the alignment weight (``da_ramp``; robust variant only).
DA_RAMPS = ("none", "dann")


def dann_ramp(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule ``2 / (1 + exp(-gamma p)) - 1`` at ``p = progress`` (clipped to [0, 1]).

    >>> dann_ramp(0.0), round(dann_ramp(1.0), 5)
    (0.0, 0.99991)
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class SIDDAMethod(DAMethod):
    """SIDDA's objective for the training loop.

    Args:
        variant: ``"paper"`` or ``"robust"`` (module docstring).
        eta_mode: ``"faithful"`` or ``"clean"`` (:class:`~sidda.losses.SIDDALoss`); the robust
            variant always updates the etas the clean way.
        blur, blur_factor, blur_floor, scaling, backend: The Sinkhorn options of
            :class:`~sidda.losses.SIDDALoss`; ``blur_factor`` defaults to the variant's
            (paper :data:`~sidda.losses.BLUR_FACTOR`, robust :data:`ROBUST_BLUR_FACTOR`).
        latent_dim, num_classes: Unused (every method receives them).
        eta_ratio_min: Override of the variant's ``eta_2 / eta_1`` lower bound.
        stationary_init: Override of the variant's eta initialisation (True: at the first
            alignment step, from that step's CE and DA).
        domain_bn: Override of the variant's BatchNorm statistics (True: one set per domain,
            :class:`~sidda.methods.domain_bn.DomainStats`; robust: on, paper: off).
        da_ramp: ``"none"`` or ``"dann"``: multiply the DA term by :func:`dann_ramp` of the
            alignment progress (module docstring, 6); robust variant only.
        label_cost: Weight of the classes in the class-aware alignment (module docstring, 7);
            None: the variant's (robust :data:`ROBUST_LABEL_COST`, paper 0); 0: latents only.
        stationary_window: Fraction of the alignment phase over which the stationary start
            is taken (module docstring, 5); None: the variant's (robust
            :data:`ROBUST_STATIONARY_WINDOW`, paper 0); 0: the first alignment step alone.
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
        da_ramp: str = "none",
        stationary_window: float | None = None,
        label_cost: float | None = None,
    ) -> None:
        if variant not in ("paper", "robust"):
            raise ValueError(f"variant must be 'paper' or 'robust', got {variant!r}")
        if da_ramp not in DA_RAMPS:
            raise ValueError(f"da_ramp must be one of {DA_RAMPS}, got {da_ramp!r}")
        robust = variant == "robust"
        super().__init__(domain_bn=robust if domain_bn is None else domain_bn)
        if stationary_window is None:
            stationary_window = ROBUST_STATIONARY_WINDOW if robust else 0.0
        if da_ramp != "none" and not robust:
            raise ValueError("da_ramp is an option of the robust variant; the paper variant "
                             "weighs the DA term by its eta alone")
        if not 0.0 <= stationary_window < 1.0:
            raise ValueError(f"stationary_window must lie in [0, 1), got {stationary_window}")
        if stationary_window > 0 and not robust:
            raise ValueError("stationary_window is an option of the robust variant")
        if label_cost is None:
            label_cost = ROBUST_LABEL_COST if robust else 0.0
        if not (label_cost >= 0 and math.isfinite(label_cost)):
            raise ValueError(f"label_cost must be a finite number >= 0, got {label_cost}")
        if label_cost > 0 and not robust:
            raise ValueError("label_cost is an option of the robust variant")
        self.label_cost = float(label_cost)
        self.variant = variant
        self.da_ramp = da_ramp
        self.stationary_window = float(stationary_window)
        if eta_ratio_min is None:
            eta_ratio_min = ROBUST_RATIO_MIN if robust else 0.25
        self.stationary_init = robust if stationary_init is None else stationary_init
        if blur_factor is None:
            blur_factor = ROBUST_BLUR_FACTOR if robust else BLUR_FACTOR
        self.loss = SIDDALoss(
            mode="clean" if robust else eta_mode, blur=blur, blur_factor=blur_factor,
            blur_floor=blur_floor, scaling=scaling, backend=backend,
            eta_ratio_min=eta_ratio_min,
        )
        # whether the etas were set from a first alignment step (saved with the checkpoint)
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        if self.stationary_window > 0:  # sums of CE, DA and steps over the window (resumable)
            self.register_buffer("window_sums", torch.zeros(3, dtype=torch.float64))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """As :meth:`torch.nn.Module.load_state_dict`; a checkpoint written before the window
        existed (no ``window_sums``) loads with empty sums."""
        if hasattr(self, "window_sums") and "window_sums" not in state_dict:
            state_dict = {**state_dict, "window_sums": torch.zeros_like(self.window_sums)}
        return super().load_state_dict(state_dict, strict, assign)

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

    @torch.no_grad()
    def settle(self, ce: float, da: float) -> None:
        """Inside the stationary window: set the etas to the stationary values of the window's
        mean CE and DA so far (the bounds hold)."""
        if not (math.isfinite(ce) and math.isfinite(da)):
            return
        sums = self.window_sums
        sums += torch.tensor([ce, da, 1.0], dtype=sums.dtype)
        mean_ce, mean_da = (sums[:2] / sums[2]).tolist()
        e1 = max(math.sqrt(max(mean_ce, 0.0)), ETA_1_MIN)
        self.loss.eta_1.fill_(e1)
        self.loss.eta_2.fill_(max(math.sqrt(max(mean_da, 0.0)), self.loss.eta_ratio_min * e1))
        self.started.fill_(True)

    def da_weight(self, progress: float) -> float:
        """The factor of the DA term at this alignment ``progress`` (1 without a ramp)."""
        return dann_ramp(progress) if self.da_ramp == "dann" else 1.0

    def weigh(self, ce: Tensor, da: Tensor, progress: float = 1.0) -> Tensor:
        """The weighted objective for this step's CE and DA (0-d tensors); the robust variant
        first sets the etas to their stationary values (from the unramped DA), once, at its
        first alignment step. ``progress`` (fraction of the alignment phase done) matters only
        with ``da_ramp``."""
        if self.stationary_init and progress < self.stationary_window:
            self.settle(ce.item(), da.item())
        else:
            self.start_from(ce.item(), da.item())
        if self.da_ramp == "none":
            return self.loss.weigh(ce, da)
        return self.loss.weigh(ce, self.da_weight(progress) * da)

    def forward(self, out: StepOutputs) -> MethodOutput:
        """The weighted objective of one step (:meth:`weigh` of the loss's CE and DA).

        Latent distances that overflow (a non-finite maximum distance) give a step to skip
        (``skip="max distance"``), before the etas are touched.
        """
        if self.label_cost > 0:
            ce = F.cross_entropy(out.logits_s, out.y_s)
            res = self.loss.output(ce, *self.class_aware_alignment(out))
        else:
            res = self.loss(out.logits_s, out.y_s, out.z_s, out.z_t)
        if not math.isfinite(res.max_distance):
            return MethodOutput(res.total, res.ce, res.da, {"max_distance": res.max_distance},
                                skip="max distance")
        total = self.weigh(res.ce, res.da, out.progress)
        return MethodOutput(total, res.ce, res.da, {
            "blur": res.blur, "max_distance": res.max_distance,
            "eta_1": self.loss.eta_1.item(), "eta_2": self.loss.eta_2.item(),
        })

    @torch.no_grad()
    def alignment(self, out: StepOutputs) -> float:
        """The Sinkhorn term alone, at the dynamic blur (no eta is touched)."""
        if self.label_cost > 0:
            return float(self.class_aware_alignment(out)[0])
        return float(self.loss.sinkhorn(out.z_s, out.z_t))

    def class_aware_alignment(self, out: StepOutputs) -> tuple[Tensor, float, float]:
        r"""The class-aware DA term ``(da, blur, max_distance)`` (module docstring, 7).

        Each point carries its class beside its latent: :math:`a_i = (z_{s,i},\, c\,e_{y_i})`,
        :math:`b_j = (z_{t,j},\, c\,p_j)` with :math:`p_j` the target softmax and
        :math:`c = \lambda D / \sqrt 2` (:math:`\lambda` = ``label_cost``, :math:`D` the largest
        source-target latent distance, no gradient), so two confident points of different
        classes are :math:`\lambda D` apart in the label coordinates. The blur is the dynamic
        blur of the latents alone.
        """
        z_s, z_t = out.z_s.float(), out.z_t.float()
        max_distance = max_cross_distance(z_s, z_t)
        sk = self.loss.sinkhorn
        blur = sk.blur_for(max_distance)
        if not math.isfinite(max_distance):
            return z_s.new_tensor(math.nan), blur, max_distance
        p_t = out.logits_t.float().softmax(1)  # (B_t, K)
        if not bool(torch.isfinite(p_t).all()):  # non-finite logits: a NaN term, a skipped step
            return z_s.new_tensor(math.nan), blur, max_distance
        c = self.label_cost * max_distance / math.sqrt(2.0)
        a = torch.cat([z_s, c * F.one_hot(out.y_s, p_t.shape[1]).to(z_s.dtype)], dim=1)
        b = torch.cat([z_t, c * p_t], dim=1)  # (B_s, D + K) and (B_t, D + K)
        return sk.divergence(a, b, blur), blur, max_distance
