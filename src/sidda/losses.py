r"""The SIDDA loss: a dynamic-blur Sinkhorn divergence between latent batches, weighted by
learnable uncertainty coefficients.

Notation used throughout the package: a suffix ``_s`` marks the labelled *source* domain and
``_t`` the unlabelled *target* domain (``x_s``, ``y_s``, ``z_s``, ``z_t``). ``z`` is the latent
vector of a model (the 256-d LayerNorm output), ``B`` a batch size and ``D`` the latent width.

The alignment term is the debiased Sinkhorn divergence of geomloss with the squared Euclidean
cost :math:`C(x, y) = \tfrac12\|x - y\|^2` and entropic temperature :math:`\varepsilon = \sigma^2`
(``blur`` :math:`= \sigma`):

.. math::

    S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
        - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

with uniform weights on both point clouds. SIDDA sets :math:`\sigma` at every step from the
geometry of the batch, :math:`\sigma = \max(0.05 \max_{ij} \|z_{s,i} - z_{t,j}\|, 0.01)`
(:func:`dynamic_blur`), and balances the classification and alignment terms with two learnable
coefficients (Kendall et al. 2018):

.. math::

    L = \frac{\mathrm{CE}}{2\eta_1^2} + \frac{S_\varepsilon}{2\eta_2^2} + \log(\eta_1 \eta_2),

with :math:`\eta_1 \ge 10^{-3}` and :math:`\eta_2 \ge \tfrac14 \eta_1` (the DA weight can be at
most 16 times the CE weight).

Two update orders are offered (:class:`SIDDALoss` ``mode``):

``"faithful"``
    The authors' order: the bounds are clamped *before* ``optimizer.step()``, so a freshly
    stepped value may sit outside them for one step; the etas share AdamW's weight decay and the
    scheduler's learning-rate decay with the model.
``"clean"``
    The bounds are clamped *after* ``optimizer.step()``, so they always hold when the etas are
    used, and the etas get no weight decay (decay pulls them towards 0, against the bounds).

Backends of :func:`sinkhorn_divergence` (all compute the same number; ``"auto"`` is pinned by
size, it never hands the choice to geomloss):

``"tensorized"``
    geomloss with full B_s x B_t cost matrices (four of them, plus log-sum-exp temporaries).
``"dense"``
    sidda's own solver (:mod:`sidda._sinkhorn`) with full matrices, the four problems batched:
    about twice as fast as geomloss at SIDDA's batch of 128, no faster from 256 on.
``"blocked"``
    sidda's own solver that never holds a B x B matrix (cost blocks recomputed, the last
    gradient written out): memory O((B_s + B_t) D + block), time about twice the tensorized
    one when both fit.
``"auto"``
    ``"dense"`` up to :data:`AUTO_DENSE_MAX` points, then ``"tensorized"`` while its matrices
    fit in :data:`AUTO_TENSORIZED_BYTES`, else ``"blocked"`` (:func:`resolve_backend`; the
    crossovers were measured in ``benchmarks/bench_sinkhorn.py``).
``"online"``, ``"multiscale"``
    geomloss's KeOps backends; they need ``pykeops`` and a C++ compiler at run time.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from geomloss import SamplesLoss
from torch import Tensor, nn
from torch.nn import functional as F

from sidda._sinkhorn import _sinkhorn_blocked, _sinkhorn_dense, _torch_single_threaded

__all__ = [
    "BACKENDS",
    "BLUR_FACTOR",
    "ETA_1_MIN",
    "ETA_RATIO_MIN",
    "SIDDALoss",
    "SIDDAOutput",
    "SinkhornLoss",
    "check_latents",
    "dynamic_blur",
    "max_cross_distance",
    "resolve_backend",
    "sinkhorn_divergence",
]

EtaMode = Literal["faithful", "clean"]
ETA_1_MIN = 1e-3
ETA_RATIO_MIN = 0.25
#: The paper's factor of the dynamic blur (``blur = max(BLUR_FACTOR * max distance, floor)``).
BLUR_FACTOR = 0.05
BACKENDS = ("auto", "dense", "tensorized", "blocked", "online", "multiscale")
AUTO_DENSE_MAX = 256  # "auto" uses "dense" up to this many points per cloud
AUTO_TENSORIZED_BYTES = 1 << 30  # then "tensorized" while its matrices fit in this


def check_latents(z_s: Tensor, z_t: Tensor) -> None:
    """Raise ValueError unless ``z_s`` (B_s, D) and ``z_t`` (B_t, D) are two non-empty latent
    batches of the same width."""
    if z_s.ndim != 2 or z_t.ndim != 2:
        raise ValueError(
            f"latents must be 2-D (batch, features), got z_s {tuple(z_s.shape)} and "
            f"z_t {tuple(z_t.shape)}; flatten them with z.flatten(1)"
        )
    if z_s.shape[1] != z_t.shape[1]:
        raise ValueError(
            f"source and target latents must have the same width, got {z_s.shape[1]} and "
            f"{z_t.shape[1]}"
        )
    if len(z_s) == 0 or len(z_t) == 0:
        raise ValueError("source and target batches must each hold at least one latent vector")


def sinkhorn_divergence(
    z_s: Tensor,
    z_t: Tensor,
    *,
    blur: float,
    scaling: float = 0.9,
    backend: str = "auto",
) -> Tensor:
    r"""Debiased Sinkhorn divergence between two latent point clouds.

    geomloss ``SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, reach=None,
    debias=True)`` with uniform weights: cost :math:`\tfrac12\|x-y\|^2`,
    :math:`\varepsilon = \text{blur}^2`, balanced transport.

    Args:
        z_s: Source latents, shape (B_s, D).
        z_t: Target latents, shape (B_t, D).
        blur: Entropic blur :math:`\sigma > 0` (a float: no gradient flows through it).
        scaling: Ratio of the epsilon-scaling annealing, in (0, 1); larger is more accurate
            and slower.
        backend: ``"auto"`` (by size, see :func:`resolve_backend`), ``"dense"``,
            ``"tensorized"`` (geomloss), ``"blocked"`` (bounded memory), or geomloss's
            ``"online"`` and ``"multiscale"`` (need pykeops); see the module docstring.

    Returns:
        A 0-d tensor, differentiable with respect to both clouds.

    >>> z = torch.randn(16, 4)
    >>> float(sinkhorn_divergence(z, z, blur=0.05)) < 1e-4
    True
    """
    check_latents(z_s, z_t)
    blur = float(blur)
    if not math.isfinite(blur) or blur <= 0:
        raise ValueError(f"blur must be a finite number > 0, got {blur}; e.g. blur=0.05")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}; the paper uses 0.9")
    backend = resolve_backend(backend, len(z_s), len(z_t), z_s.element_size())
    if backend == "blocked":
        return _sinkhorn_blocked(z_s, z_t, blur=blur, scaling=scaling)
    if backend == "dense":
        with _torch_single_threaded():  # hundreds of tiny operations: hand-offs cost more
            return _sinkhorn_dense(z_s, z_t, blur=blur, scaling=scaling)
    if backend in ("online", "multiscale"):
        try:
            import pykeops  # noqa: F401
        except ImportError as err:
            raise ValueError(
                f"backend={backend!r} needs pykeops (and a C++ compiler at run time), which is "
                "not installed; use backend='blocked' (bounded memory) or 'auto'"
            ) from err
    loss = SamplesLoss(
        "sinkhorn", p=2, blur=blur, scaling=scaling, reach=None, debias=True, backend=backend
    )
    return loss(z_s, z_t)


def resolve_backend(backend: str, n_s: int, n_t: int, itemsize: int = 4) -> str:
    """The backend :func:`sinkhorn_divergence` uses for clouds of ``n_s`` and ``n_t`` points.

    ``"auto"`` becomes ``"dense"`` up to :data:`AUTO_DENSE_MAX` points per cloud, then
    ``"tensorized"`` while its cost matrices and log-sum-exp temporaries
    (:func:`_tensorized_bytes`) fit in :data:`AUTO_TENSORIZED_BYTES`, else ``"blocked"``;
    other names are returned as they are.

    >>> [resolve_backend("auto", b, b) for b in (128, 1024, 4096)]
    ['dense', 'tensorized', 'blocked']
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if max(n_s, n_t) <= AUTO_DENSE_MAX:
        return "dense"
    if _tensorized_bytes(n_s, n_t, itemsize) <= AUTO_TENSORIZED_BYTES:
        return "tensorized"
    return "blocked"


def _tensorized_bytes(n_s: int, n_t: int, itemsize: int) -> int:
    """Peak bytes of geomloss's tensorized backend, forward and backward: about 24 matrices of
    the largest size (measured in benchmarks/bench_sinkhorn.py)."""
    return 24 * itemsize * max(n_s * n_t, n_s * n_s, n_t * n_t)


def max_cross_distance(z_s: Tensor, z_t: Tensor) -> float:
    """Largest Euclidean distance between a source and a target latent, without gradient.

    Args:
        z_s: Source latents, shape (B_s, D).
        z_t: Target latents, shape (B_t, D).

    >>> max_cross_distance(torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0]]))
    5.0
    """
    check_latents(z_s, z_t)
    with torch.no_grad():
        d = torch.cdist(z_s.detach().float(), z_t.detach().float())  # (B_s, B_t)
        return float(d.max())


def dynamic_blur(
    z_s: Tensor, z_t: Tensor, *, factor: float = BLUR_FACTOR, floor: float = 0.01
) -> float:
    r"""SIDDA's blur: ``max(factor * max_ij ||z_s,i - z_t,j||, floor)``, with no gradient.

    Only cross-domain pairs enter the maximum, as in the paper. The rule itself is
    :meth:`SinkhornLoss.blur_for` (inf when the distances overflow).

    >>> dynamic_blur(torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0]]))
    0.25
    >>> dynamic_blur(torch.zeros(2, 3), torch.zeros(1, 3))
    0.01
    """
    rule = SinkhornLoss(blur_factor=factor, blur_floor=floor)
    return rule.blur_for(max_cross_distance(z_s, z_t))


class SinkhornLoss(nn.Module):
    """:func:`sinkhorn_divergence` as a module, with a fixed or a dynamic blur.

    The blur rule (:meth:`blur_for`) lives here alone; :class:`SIDDALoss` (in training, on one
    process or on the gathered batch of several ranks) and validation use it. Latent
    distances that overflow float32 (``max_distance`` inf or NaN) give an infinite
    dynamic blur and a NaN divergence (:meth:`divergence`), never an exception, so that a
    training step can see the overflow and skip itself.

    Args:
        blur: A fixed blur, or ``None`` for SIDDA's dynamic blur (:func:`dynamic_blur`).
        blur_factor: Factor of the dynamic blur (> 0).
        blur_floor: Lower bound of the dynamic blur (> 0).
        scaling: epsilon-scaling ratio.
        backend: Sinkhorn backend (:func:`sinkhorn_divergence`).

    >>> z_s, z_t = torch.randn(8, 4), torch.randn(8, 4)
    >>> bool(SinkhornLoss(blur=0.05)(z_s, z_t) == sinkhorn_divergence(z_s, z_t, blur=0.05))
    True
    >>> [SinkhornLoss().blur_for(d) for d in (5.0, 0.0, math.inf)]
    [0.25, 0.01, inf]
    """

    def __init__(
        self,
        *,
        blur: float | None = None,
        blur_factor: float = BLUR_FACTOR,
        blur_floor: float = 0.01,
        scaling: float = 0.9,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not (blur_factor > 0 and blur_floor > 0):
            raise ValueError(
                f"factor and floor must be > 0, got factor={blur_factor}, floor={blur_floor}; "
                f"the paper uses {BLUR_FACTOR} and 0.01"
            )
        self.blur = blur
        self.blur_factor = blur_factor
        self.blur_floor = blur_floor
        self.scaling = scaling
        self.backend = backend

    def blur_for(self, max_distance: float) -> float:
        """The blur for batches whose largest cross-domain distance is ``max_distance``.

        The fixed blur if one is set; else ``max(blur_factor * max_distance, blur_floor)``,
        and inf when ``max_distance`` is not finite (the latent distances overflow).
        """
        if self.blur is not None:
            return float(self.blur)
        if not math.isfinite(max_distance):
            return math.inf
        return max(self.blur_factor * max_distance, self.blur_floor)

    def resolve_blur(self, z_s: Tensor, z_t: Tensor) -> float:
        """The blur used for this pair of batches (:meth:`blur_for` of their distance)."""
        if self.blur is not None:
            return float(self.blur)
        return self.blur_for(max_cross_distance(z_s, z_t))

    def divergence(self, z_s: Tensor, z_t: Tensor, blur: float) -> Tensor:
        """The Sinkhorn divergence at ``blur``; a NaN 0-d tensor when ``blur`` is not finite."""
        if not math.isfinite(blur):
            return z_s.new_tensor(math.nan)
        return sinkhorn_divergence(z_s, z_t, blur=blur, scaling=self.scaling,
                                   backend=self.backend)

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:  # noqa: D102
        return self.divergence(z_s, z_t, self.resolve_blur(z_s, z_t))


class SIDDAOutput(NamedTuple):
    """Everything one SIDDA loss evaluation produces (tensors are 0-d; floats are logged)."""

    total: Tensor
    ce: Tensor
    da: Tensor
    blur: float
    max_distance: float
    eta_1: float
    eta_2: float


class SIDDALoss(nn.Module):
    r"""Cross-entropy plus dynamic-blur Sinkhorn alignment, weighted by learnable etas.

    ``total = CE/(2 eta_1^2) + DA/(2 eta_2^2) + log(eta_1 eta_2)``; see the module docstring
    for the bounds and the two update orders.

    Use in any training loop::

        criterion = SIDDALoss(mode="clean")
        optimizer = torch.optim.AdamW(
            [{"params": model.parameters()}, criterion.param_group()], lr=1e-2, weight_decay=1e-3)
        z, logits = model(torch.cat([x_s, x_t]))
        out = criterion(logits[:len(x_s)], y_s, z[:len(x_s)], z[len(x_s):])
        out.total.backward()
        criterion.before_step(); optimizer.step(); criterion.after_step()

    Args:
        mode: ``"faithful"`` (the paper's order) or ``"clean"``.
        blur: A fixed blur instead of the dynamic one (``None``: dynamic, the method).
        blur_factor: Factor of the dynamic blur (:data:`BLUR_FACTOR`, the paper's).
        blur_floor: Floor of the dynamic blur (0.01 in the paper).
        scaling: epsilon-scaling ratio of the Sinkhorn loop (0.9 in the paper).
        backend: Sinkhorn backend (:func:`sinkhorn_divergence`).
        eta_init: Initial value of both etas.
        eta_ratio_min: Lower bound of ``eta_2 / eta_1`` (0.25 in the paper: the DA weight is
            at most 16 times the CE weight; 1 keeps it at most the CE weight).
    """

    def __init__(
        self,
        *,
        mode: EtaMode = "faithful",
        blur: float | None = None,
        blur_factor: float = BLUR_FACTOR,
        blur_floor: float = 0.01,
        scaling: float = 0.9,
        backend: str = "auto",
        eta_init: float = 1.0,
        eta_ratio_min: float = ETA_RATIO_MIN,
    ) -> None:
        super().__init__()
        if not eta_ratio_min > 0:
            raise ValueError(f"eta_ratio_min must be > 0, got {eta_ratio_min}")
        self.eta_ratio_min = float(eta_ratio_min)
        if mode not in ("faithful", "clean"):
            raise ValueError(f"mode must be 'faithful' or 'clean', got {mode!r}")
        if eta_init <= 0:
            raise ValueError(f"eta_init must be > 0, got {eta_init}")
        self.mode = mode
        self.sinkhorn = SinkhornLoss(
            blur=blur, blur_factor=blur_factor, blur_floor=blur_floor, scaling=scaling,
            backend=backend,
        )
        self.eta_1 = nn.Parameter(torch.tensor(float(eta_init)))
        self.eta_2 = nn.Parameter(torch.tensor(float(eta_init)))

    def param_group(self) -> dict:
        """The optimiser parameter group of the etas.

        ``"faithful"`` inherits the optimiser's defaults (weight decay included);
        ``"clean"`` sets weight decay to 0.
        """
        group: dict = {"params": [self.eta_1, self.eta_2]}
        if self.mode == "clean":
            group["weight_decay"] = 0.0
        return group

    @torch.no_grad()
    def clamp_(self) -> None:
        """Apply the bounds ``eta_1 >= 1e-3`` and ``eta_2 >= eta_ratio_min * eta_1`` in place."""
        self.eta_1.clamp_(min=ETA_1_MIN)
        self.eta_2.clamp_(min=self.eta_ratio_min * self.eta_1.item())

    def before_step(self) -> None:
        """Call between ``backward()`` and ``optimizer.step()``."""
        if self.mode == "faithful":
            self.clamp_()

    def after_step(self) -> None:
        """Call right after ``optimizer.step()``."""
        if self.mode == "clean":
            self.clamp_()

    def weigh(self, ce: Tensor, da: Tensor) -> Tensor:
        """The weighted objective for given CE and DA values (0-d tensors)."""
        e1, e2 = self.eta_1, self.eta_2
        return ce / (2 * e1**2) + da / (2 * e2**2) + torch.log(e1.abs() * e2.abs())

    def alignment(self, z_s: Tensor, z_t: Tensor) -> tuple[Tensor, float, float]:
        """The DA term of two latent batches, in float32: ``(da, blur, max_distance)``.

        ``max_distance`` is the largest source-target distance, ``blur`` the Sinkhorn blur
        (:meth:`SinkhornLoss.blur_for`) and ``da`` the divergence at it. When the distances
        overflow, ``max_distance`` is not finite and ``da`` is NaN, with a fixed blur too (no
        exception: with several ranks, every rank must reach the next collective).
        """
        max_distance = max_cross_distance(z_s, z_t)
        sk = self.sinkhorn
        blur = sk.blur_for(max_distance)
        if not math.isfinite(max_distance):
            return z_s.new_tensor(math.nan, dtype=torch.float32), blur, max_distance
        return sk.divergence(z_s.float(), z_t.float(), blur), blur, max_distance

    def output(self, ce: Tensor, da: Tensor, blur: float, max_distance: float) -> SIDDAOutput:
        """The :class:`SIDDAOutput` of given CE and DA terms (weighed with the etas)."""
        return SIDDAOutput(
            total=self.weigh(ce, da),
            ce=ce,
            da=da,
            blur=blur,
            max_distance=max_distance,
            eta_1=self.eta_1.item(),
            eta_2=self.eta_2.item(),
        )

    def forward(self, logits_s: Tensor, y_s: Tensor, z_s: Tensor, z_t: Tensor) -> SIDDAOutput:
        """Evaluate the loss (:meth:`alignment` for the DA term, then :meth:`output`).

        Latent distances that overflow give a non-finite ``max_distance`` and NaN ``da`` and
        ``total`` (see :class:`SinkhornLoss`).

        Args:
            logits_s: Source logits, shape (B_s, K).
            y_s: Source labels, shape (B_s,), int64.
            z_s: Source latents, shape (B_s, D).
            z_t: Target latents, shape (B_t, D).
        """
        ce = F.cross_entropy(logits_s, y_s)
        da, blur, max_distance = self.alignment(z_s, z_t)
        return self.output(ce, da, blur, max_distance)
