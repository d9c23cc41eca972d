"""``LossConfig``: which objective a run trains, and that method's options.

Every option belongs to one or more methods (:data:`OPTIONS`). An option left ``null`` takes its
method's default, which is written back into the config, so a run's ``config.yaml`` records the
values it ran with. Setting an option of another method (``loss.eta_mode`` with ``method: dan``)
is an error, not a silent no-op.

>>> LossConfig(method="dan").weight
1.0
>>> LossConfig().variant, LossConfig().eta_mode
('robust', 'clean')
>>> LossConfig(variant="paper").eta_mode
'faithful'
>>> LossConfig().domain_bn, LossConfig(method="dan").domain_bn
(True, False)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import nn

from sidda.errors import ConfigError
from sidda.losses import BACKENDS, BLUR_FACTOR
from sidda.methods.domain_bn import batchnorm_layers
from sidda.methods.sidda import (
    DA_RAMPS,
    ROBUST_BLUR_FACTOR,
    ROBUST_LABEL_COST,
    ROBUST_STATIONARY_WINDOW,
)

#: The sidda variant a config gets when it names none (docs/method.md, "Which method and
#: variant by default"); the paper's experiments in configs/ name ``variant: paper``.
DEFAULT_VARIANT = "robust"

__all__ = ["LEGACY_OPTIONS", "LossConfig", "METHOD_NAMES", "OPTIONS", "VARIANTS", "defaults",
           "method_loss"]

#: The options of each method and their defaults (``None`` in ``blur``: the dynamic blur).
OPTIONS: dict[str, dict[str, object]] = {
    "source_only": {},
    "sidda": {  # the paper variant's values; the default variant's own are VARIANT_DEFAULTS
        "variant": DEFAULT_VARIANT, "eta_mode": "faithful", "blur": None,
        "blur_factor": BLUR_FACTOR, "blur_floor": 0.01, "scaling": 0.9, "backend": "auto",
        "da_ramp": "none", "stationary_window": 0.0, "domain_bn": False, "label_cost": 0.0,
    },
    "dan": {"weight": 1.0, "domain_bn": False},
    "coral": {"weight": 1.0, "domain_bn": False},
    "dann": {"weight": 1.0, "domain_bn": False},
    "cdan": {"weight": 1.0, "domain_bn": False},
    "deepjdot": {"weight": 1.0, "jdot_alpha": 1.0, "jdot_lambda": 1.0, "blur": 0.1,
                 "scaling": 0.9, "domain_bn": False},
    "mcc": {"weight": 1.0, "temperature": 2.5, "domain_bn": False},
    "adabn": {},  # source-only training, target statistics after it: no option
}
METHOD_NAMES = tuple(OPTIONS)
#: Options added after runs were recorded without them, whose default today is not what those
#: runs did: a run's own ``config.yaml`` that lacks one takes this value (what reproduces the
#: run), not the default (:meth:`sidda.config.RunConfig.from_yaml` with ``record=True``). The
#: robust variant trained on latents alone before ``label_cost`` existed.
LEGACY_OPTIONS: dict[str, object] = {"label_cost": 0.0}
VARIANTS = ("paper", "robust")
#: Defaults of a sidda variant that differ from :data:`OPTIONS` (docs/method.md, "Robust SIDDA").
VARIANT_DEFAULTS: dict[str, dict[str, object]] = {
    "robust": {"eta_mode": "clean", "blur_factor": ROBUST_BLUR_FACTOR,
               "stationary_window": ROBUST_STATIONARY_WINDOW, "domain_bn": True,
               "label_cost": ROBUST_LABEL_COST},
}


def defaults(method: str, variant: str | None = None) -> dict[str, object]:
    """The default options of ``method`` (and of its ``variant``, for sidda).

    >>> defaults("sidda", "robust")["eta_mode"]
    'clean'
    >>> defaults("dan")
    {'weight': 1.0, 'domain_bn': False}
    """
    out = dict(OPTIONS[method])
    if "variant" in out:
        out["variant"] = variant or out["variant"]
        out.update(VARIANT_DEFAULTS.get(str(out["variant"]), {}))
    return out


def method_loss(loss: dict, method: str, *, variant: str | None = None,
                domain_bn: bool | None = None) -> dict:
    """The ``loss`` section of a run of ``method``, derived from a base config's section.

    Keeps the options of ``loss`` that belong to ``method`` (``OPTIONS[method]``), are not
    null and differ from the base method's (and variant's) defaults, so a base config written
    for one method (``eta_mode`` for sidda) can train another (``dan``) without the "option of
    another method" error, and an option the base left at its default takes the new method's
    (or variant's) default. ``variant`` (sidda only) replaces the base config's, and
    ``domain_bn`` (not None) the base config's ``domain_bn``.

    >>> method_loss({"method": "sidda", "eta_mode": "clean", "weight": None}, "dan")
    {'method': 'dan'}
    >>> method_loss({"method": "sidda", "variant": "paper", "eta_mode": "clean",
    ...              "blur_floor": 0.01}, "sidda", variant="robust")
    {'method': 'sidda', 'eta_mode': 'clean', 'variant': 'robust'}
    >>> method_loss({"method": "sidda"}, "dan", domain_bn=True)
    {'method': 'dan', 'domain_bn': True}
    """
    base = loss.get("method", "sidda")
    base_defaults = defaults(base, loss.get("variant")) if base in OPTIONS else {}
    own = OPTIONS.get(method, {})
    out: dict = {"method": method}
    out.update({k: v for k, v in loss.items()
                if k in own and k != "variant" and v is not None and v != base_defaults.get(k)})
    if "variant" in own:
        out["variant"] = variant or loss.get("variant") or own["variant"]
    if domain_bn is not None:
        out["domain_bn"] = domain_bn
    return out


@dataclass(frozen=True)
class LossConfig:
    """Which objective to train (``method``) and its options (``null``: the method's default).

    Attributes:
        method: ``source_only`` (cross-entropy on the source alone), ``sidda``, ``dan``
            (multi-kernel MMD), ``coral`` (Deep CORAL), ``dann`` (gradient reversal),
            ``cdan`` (conditional adversarial), ``deepjdot`` (joint feature/label optimal
            transport), ``mcc`` (minimum class confusion) or ``adabn`` (source-only training,
            then target BatchNorm statistics); see docs/method.md.
        variant: sidda: ``robust`` (the default) or ``paper`` (the authors' computation);
            see :mod:`sidda.methods.sidda`.
        domain_bn: every method but source_only and adabn: one set of BatchNorm running
            statistics per domain (two forward passes per step; target images use the target
            statistics in validation, evaluation and prediction). On for the robust variant,
            off for every other method (:mod:`sidda.methods.domain_bn`).
        eta_mode: sidda: ``faithful`` (the authors' update order of the etas; the paper
            variant's default) or ``clean`` (the robust variant's, and its only mode).
        blur: sidda: a fixed blur, or null for the dynamic blur (the method); deepjdot: the
            entropic blur of its transport plan, relative to the cost scale.
        blur_factor: sidda: factor of the dynamic blur.
        blur_floor: sidda: floor of the dynamic blur.
        scaling: sidda, deepjdot: epsilon-scaling ratio of the Sinkhorn loop.
        backend: sidda: Sinkhorn backend (``auto`` picks by batch size).
        da_ramp: sidda, robust variant: ``none`` or ``dann`` (the DA term times
            ``2 / (1 + exp(-10 p)) - 1``, p the fraction of the alignment phase done; see
            :mod:`sidda.methods.sidda`).
        stationary_window: sidda, robust variant: fraction of the alignment phase over which
            the etas are held at the stationary values of the mean CE and DA so far (0.05, the
            robust default; 0: set once, from the first alignment step).
        label_cost: sidda, robust variant: class-aware alignment; each latent carries its
            class (the source label, the target softmax) scaled so that two confident points
            of different classes are ``label_cost`` times the largest latent distance apart
            (0.5, the robust default; 0: latents only; see :mod:`sidda.methods.sidda`).
        weight: Trade-off of the alignment term (every method but sidda, whose weights are
            learned, and source_only).
        jdot_alpha: deepjdot: weight of the feature distance in the joint cost.
        jdot_lambda: deepjdot: weight of the label loss in the joint cost.
        temperature: mcc: softmax temperature of the class-confusion matrix.
    """

    method: str = "sidda"
    variant: str | None = None
    domain_bn: bool | None = None
    eta_mode: str | None = None
    blur: float | None = None
    blur_factor: float | None = None
    blur_floor: float | None = None
    scaling: float | None = None
    backend: str | None = None
    da_ramp: str | None = None
    stationary_window: float | None = None
    label_cost: float | None = None
    weight: float | None = None
    jdot_alpha: float | None = None
    jdot_lambda: float | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.method not in OPTIONS:
            raise ValueError(
                f"loss.method must be one of {', '.join(METHOD_NAMES)}, got {self.method!r}"
            )
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"loss.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.domain_bn is not None and self.method in ("source_only", "adabn"):
            raise ValueError(
                f"loss.domain_bn is an option of the methods that align target batches, not "
                f"of {self.method!r}, which trains on the source alone"
                + (" (adabn estimates target statistics after training by itself)"
                   if self.method == "adabn" else " (method: adabn adds target statistics)")
                + "; remove it (or set it to null)"
            )
        own = defaults(self.method, self.variant)
        for f in dataclasses.fields(self):
            if f.name == "method":
                continue
            value = getattr(self, f.name)
            if f.name in own:
                if value is None:
                    object.__setattr__(self, f.name, own[f.name])
            elif value is not None:
                users = [m for m, opts in OPTIONS.items() if f.name in opts]
                raise ValueError(
                    f"loss.{f.name} is an option of {' and '.join(users)}, not of "
                    f"{self.method!r}; remove it (or set it to null)"
                )
        self._check_values()

    def _check_values(self) -> None:
        if self.variant == "robust" and self.eta_mode != "clean":
            raise ValueError(
                "loss.eta_mode must be 'clean' with variant robust (it updates the etas the "
                f"clean way), got {self.eta_mode!r}; remove it or use variant paper"
            )
        if self.da_ramp is not None and self.da_ramp not in DA_RAMPS:
            raise ValueError(f"loss.da_ramp must be one of {DA_RAMPS}, got {self.da_ramp!r}")
        if self.da_ramp not in (None, "none") and self.variant != "robust":
            raise ValueError(
                f"loss.da_ramp is an option of variant robust, got {self.da_ramp!r} with "
                f"variant {self.variant!r}; remove it or use variant robust"
            )
        if self.stationary_window is not None:
            if not 0 <= self.stationary_window < 1:
                raise ValueError("loss.stationary_window must lie in [0, 1), got "
                                 f"{self.stationary_window}")
            if self.stationary_window > 0 and self.variant != "robust":
                raise ValueError("loss.stationary_window is an option of variant robust; "
                                 "remove it or use variant robust")
        if self.label_cost is not None:
            if not (self.label_cost >= 0 and math.isfinite(self.label_cost)):
                raise ValueError(f"loss.label_cost must be a finite number >= 0, got "
                                 f"{self.label_cost}")
            if self.label_cost > 0 and self.variant != "robust":
                raise ValueError("loss.label_cost is an option of variant robust; remove it or "
                                 "use variant robust")
        if self.eta_mode is not None and self.eta_mode not in ("faithful", "clean"):
            raise ValueError(f"loss.eta_mode must be 'faithful' or 'clean', got {self.eta_mode!r}")
        if self.blur is not None and not self.blur > 0:
            raise ValueError(f"loss.blur must be > 0 or null, got {self.blur}")
        for name in ("blur_factor", "blur_floor"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(
                    f"loss.{name} must be > 0, got {v}; the paper uses blur_factor "
                    f"{BLUR_FACTOR} and blur_floor 0.01"
                )
        if self.scaling is not None and not 0 < self.scaling < 1:
            raise ValueError(f"loss.scaling must lie in (0, 1), got {self.scaling}; e.g. 0.9")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"loss.backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("weight", "jdot_alpha", "jdot_lambda", "temperature"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"loss.{name} must be a finite number >= 0, got {v}")
        if self.temperature is not None and self.temperature == 0:
            raise ValueError("loss.temperature must be > 0, got 0; MCC uses 2.5")

    @property
    def options(self) -> dict:
        """This method's options and their values."""
        return {k: getattr(self, k) for k in OPTIONS[self.method]}

    @property
    def uses_target(self) -> bool:
        """Whether the method reads target images (every method but ``source_only``)."""
        return self.method != "source_only"

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`~sidda.errors.ConfigError` when the model cannot serve this method:
        ``adabn`` or an explicit ``domain_bn: true`` (one that is not the method's default)
        on a model without BatchNorm layers. Robust SIDDA's default ``domain_bn`` is then a
        no-op (one set of statistics has nothing to keep per domain)."""
        if batchnorm_layers(model):
            return
        if self.method == "adabn":
            raise ConfigError(
                "loss.method adabn re-estimates BatchNorm statistics, but the model has no "
                "BatchNorm layer; choose a model with BatchNorm or another method"
            )
        if self.domain_bn and not defaults(self.method, self.variant).get("domain_bn"):
            raise ConfigError(
                "loss.domain_bn: true keeps BatchNorm statistics per domain, but the model has "
                "no BatchNorm layer; set loss.domain_bn: false or use a model with BatchNorm"
            )

