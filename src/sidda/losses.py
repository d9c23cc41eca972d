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
    sidda's own implementation with full matrices, the four problems (xy, yx, xx, yy) stacked
    into one batched tensor so that each epsilon step is a handful of tensor operations: about
    twice as fast as geomloss at SIDDA's batch of 128, no faster from 256 on.
``"blocked"``
    sidda's own implementation of the same algorithm (debiased, symmetric updates,
    epsilon-scaling) that never holds a B x B matrix: every soft-min recomputes its cost block
    by block, ``LSE_j(h_j - |y_j|^2/(2 eps) + x_i.y_j/eps)`` from one matrix product, and the
    gradient of the last iteration is written out (:class:`_SoftMin`). Memory O((B_s + B_t) D
    + block), time about twice the tensorized one when both fit.
``"auto"``
    ``"dense"`` up to :data:`AUTO_DENSE_MAX` points, then ``"tensorized"`` while its matrices
    fit in :data:`AUTO_TENSORIZED_BYTES`, else ``"blocked"`` (:func:`resolve_backend`; the
    crossovers were measured in ``benchmarks/bench_sinkhorn.py``).
``"online"``, ``"multiscale"``
    geomloss's KeOps backends; they need ``pykeops`` and a C++ compiler at run time.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Literal, NamedTuple

import numpy as np
import torch
from geomloss import SamplesLoss
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "SIDDALoss",
    "SIDDAOutput",
    "SinkhornLoss",
    "dynamic_blur",
    "max_cross_distance",
    "resolve_backend",
    "sinkhorn_divergence",
]

logger = logging.getLogger(__name__)

EtaMode = Literal["faithful", "clean"]
ETA_1_MIN = 1e-3
ETA_RATIO_MIN = 0.25
BACKENDS = ("auto", "dense", "tensorized", "blocked", "online", "multiscale")
AUTO_DENSE_MAX = 256  # "auto" uses "dense" up to this many points per cloud
AUTO_TENSORIZED_BYTES = 1 << 30  # then "tensorized" while its matrices fit in this
BLOCK_BYTES = 32 << 20  # temporaries of one block of the "blocked" backend


def _check_latents(z_s: Tensor, z_t: Tensor) -> None:
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
    _check_latents(z_s, z_t)
    blur = float(blur)
    if not math.isfinite(blur) or blur <= 0:
        raise ValueError(f"blur must be a finite number > 0, got {blur}; e.g. blur=0.05")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}; the paper uses 0.9")
    backend = resolve_backend(backend, len(z_s), len(z_t), z_s.element_size())
    if backend == "blocked":
        return _sinkhorn_blocked(z_s, z_t, blur=blur, scaling=scaling)
    if backend == "dense":
        with _one_thread():  # hundreds of tiny operations: thread hand-offs cost more than work
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


def _epsilon_schedule(diameter: float, blur: float, scaling: float) -> list[float]:
    """geomloss's temperatures for p = 2: diameter^2, then down by scaling^2 to blur^2."""
    diameter = max(diameter, blur)
    return (
        [diameter**2]
        + [float(np.exp(e)) for e in np.arange(2 * np.log(diameter), 2 * np.log(blur),
                                               2 * np.log(scaling))]
        + [blur**2]
    )


@contextmanager
def _one_thread():
    """Run torch's CPU operations single-threaded inside the block (restored after).

    The dense Sinkhorn loop is some 500 operations on (4, 128, 128) tensors; split over two
    threads each waits for its partner, and on a shared machine that wait is a scheduler time
    slice: 1 thread measured 1.6x faster on a quiet machine and 4x on a busy one.
    """
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _pad(z: Tensor, k: int) -> Tensor:
    """``z`` (N, D) padded to k rows with copies of its first row."""
    return z if len(z) == k else torch.cat([z, z[:1].expand(k - len(z), -1)])


def _sinkhorn_dense(x: Tensor, y: Tensor, *, blur: float, scaling: float) -> Tensor:
    """geomloss's debiased Sinkhorn loop with the four problems in one batched tensor.

    Problem r of (f_ba, g_ab, f_aa, g_bb) soft-mins over the points ``q_r`` of (y, x, x, y)
    with log-weights ``h_r``, seen from the points ``p_r`` of (x, y, x, y). The smaller cloud
    is padded to k = max(N, M) points of log-weight -inf (they weigh nothing).
    """
    n, m = len(x), len(y)
    k = max(n, m)
    a_log = torch.full((k,), -math.log(n), dtype=x.dtype, device=x.device)
    b_log = torch.full((k,), -math.log(m), dtype=x.dtype, device=x.device)
    a_log[n:], b_log[m:] = -math.inf, -math.inf
    xd, yd = _pad(x.detach(), k), _pad(y.detach(), k)
    lo = torch.minimum(xd.min(0).values, yd.min(0).values)
    hi = torch.maximum(xd.max(0).values, yd.max(0).values)
    eps_list = _epsilon_schedule(float((hi - lo).norm()), blur, scaling)
    q = torch.stack([yd, xd, xd, yd])  # (4, k, D)
    h = torch.stack([b_log, a_log, a_log, b_log])  # (4, k)
    half_qq = (q * q).sum(-1).unsqueeze(1) / 2  # (4, 1, k)
    partner = torch.tensor([1, 0, 2, 3], device=x.device)  # the potential on q_r: g_ab for
    # f_ba, f_ba for g_ab, f_aa and g_bb for themselves

    def softmin(half_pp: Tensor, s: Tensor, eps: float, pot: Tensor) -> Tensor:
        # s = p.q - |q|^2/2 (4, k, k);  -eps LSE_j(h_j + pot_j/eps - |p_i - q_j|^2/(2 eps))
        logits = torch.add(torch.add(h, pot, alpha=1 / eps).unsqueeze(1), s, alpha=1 / eps)
        return torch.sub(half_pp, torch.logsumexp(logits, -1), alpha=eps)  # (4, k)

    with torch.no_grad():  # a handful of operations per epsilon, whatever the batch
        p = torch.stack([xd, yd, xd, yd])
        half_pp = (p * p).sum(-1) / 2
        s = torch.baddbmm(-half_qq, p, q.transpose(1, 2))
        eps = eps_list[0]
        f = softmin(half_pp, s, eps, torch.zeros_like(h))
        for eps in eps_list:  # symmetric updates, as geomloss
            f = torch.lerp(f, softmin(half_pp, s, eps, f.index_select(0, partner)), 0.5)
    # the last extrapolation carries the gradient, through p (the first cloud of each cost)
    p = torch.stack([_pad(x, k), _pad(y, k), _pad(x, k), _pad(y, k)])
    s = torch.baddbmm(-half_qq, p, q.transpose(1, 2))
    f = softmin((p * p).sum(-1) / 2, s, eps, f.index_select(0, partner))
    return (a_log.exp() * (f[0] - f[2])).sum() + (b_log.exp() * (f[1] - f[3])).sum()


def _block_rows(n_cols: int, itemsize: int) -> int:
    """Rows per block so that three (rows, n_cols) temporaries fit in :data:`BLOCK_BYTES`."""
    return max(1, BLOCK_BYTES // (3 * n_cols * itemsize))


def _softmin(eps: float, x: Tensor, y: Tensor, h: Tensor) -> Tensor:
    r"""``-eps log sum_j exp(h_j - |x_i - y_j|^2 / (2 eps))`` for every ``x_i``, block by block.

    With :math:`C_{ij} = \tfrac12|x_i|^2 + \tfrac12|y_j|^2 - x_i \cdot y_j` this is
    :math:`\tfrac12|x_i|^2 - \varepsilon\,\mathrm{LSE}_j(h_j - |y_j|^2/(2\varepsilon)
    + x_i \cdot y_j / \varepsilon)`, one matrix product per block. x (N, D), y (M, D),
    h (M,) -> (N,). No gradient.
    """
    v = h - (y * y).sum(1) / (2 * eps)  # (M,)
    yt = y.t()
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)
    step = _block_rows(len(y), x.element_size())
    for i in range(0, len(x), step):
        xi = x[i : i + step]
        s = torch.addmm(v, xi, yt, alpha=1 / eps)  # (b, M)
        out[i : i + len(xi)] = (xi * xi).sum(1) / 2 - eps * torch.logsumexp(s, 1)
    return out


class _SoftMin(torch.autograd.Function):
    """:func:`_softmin` with its gradient in ``x`` (``y`` and ``h`` are constants).

    d/dx_i = x_i - sum_j P_ij y_j, with P the row-wise softmax of the block's logits,
    recomputed block by block in the backward pass instead of being stored.
    """

    @staticmethod
    def forward(ctx, x, y, h, eps):  # noqa: D102
        ctx.save_for_backward(x, y, h)
        ctx.eps = eps
        return _softmin(eps, x, y, h)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, y, h = ctx.saved_tensors
        eps = ctx.eps
        v = h - (y * y).sum(1) / (2 * eps)
        yt = y.t()
        out = torch.empty_like(x)
        step = _block_rows(len(y), x.element_size())
        for i in range(0, len(x), step):
            xi = x[i : i + step]
            p = torch.softmax(torch.addmm(v, xi, yt, alpha=1 / eps), 1)  # (b, M)
            out[i : i + len(xi)] = (xi - p @ y) * grad[i : i + len(xi), None]
        return out, None, None, None


def _sinkhorn_blocked(x: Tensor, y: Tensor, *, blur: float, scaling: float) -> Tensor:
    """geomloss's debiased Sinkhorn loop (``sinkhorn_loop``, p = 2, reach None) in O(B) memory.

    x (N, D), y (M, D) with uniform weights; the result equals the tensorized backend's to
    float rounding, gradients included (both differentiate only the last, extrapolated step).
    """
    n, m = len(x), len(y)
    xd, yd = x.detach(), y.detach()
    a_log = torch.full((n,), -math.log(n), dtype=x.dtype, device=x.device)
    b_log = torch.full((m,), -math.log(m), dtype=x.dtype, device=x.device)
    lo = torch.minimum(xd.min(0).values, yd.min(0).values)
    hi = torch.maximum(xd.max(0).values, yd.max(0).values)
    eps_list = _epsilon_schedule(float((hi - lo).norm()), blur, scaling)
    with torch.no_grad():
        eps = eps_list[0]
        g_ab, f_ba = _softmin(eps, yd, xd, a_log), _softmin(eps, xd, yd, b_log)
        f_aa, g_bb = _softmin(eps, xd, xd, a_log), _softmin(eps, yd, yd, b_log)
        for eps in eps_list:  # symmetric updates, as geomloss
            ft_ba = _softmin(eps, xd, yd, b_log + g_ab / eps)
            gt_ab = _softmin(eps, yd, xd, a_log + f_ba / eps)
            ft_aa = _softmin(eps, xd, xd, a_log + f_aa / eps)
            gt_bb = _softmin(eps, yd, yd, b_log + g_bb / eps)
            f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
            f_aa, g_bb = 0.5 * (f_aa + ft_aa), 0.5 * (g_bb + gt_bb)
    # the last extrapolation carries the gradient, through the first cloud of each cost only
    f_ba, g_ab = (_SoftMin.apply(x, yd, b_log + g_ab / eps, eps),
                  _SoftMin.apply(y, xd, a_log + f_ba / eps, eps))
    f_aa = _SoftMin.apply(x, xd, a_log + f_aa / eps, eps)
    g_bb = _SoftMin.apply(y, yd, b_log + g_bb / eps, eps)
    return ((f_ba - f_aa) / n).sum() + ((g_ab - g_bb) / m).sum()


def max_cross_distance(z_s: Tensor, z_t: Tensor) -> float:
    """Largest Euclidean distance between a source and a target latent, without gradient.

    Args:
        z_s: Source latents, shape (B_s, D).
        z_t: Target latents, shape (B_t, D).

    >>> max_cross_distance(torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0]]))
    5.0
    """
    _check_latents(z_s, z_t)
    with torch.no_grad():
        d = torch.cdist(z_s.detach().float(), z_t.detach().float())  # (B_s, B_t)
        return float(d.max())


def dynamic_blur(
    z_s: Tensor, z_t: Tensor, *, factor: float = 0.05, floor: float = 0.01
) -> float:
    r"""SIDDA's blur: ``max(factor * max_ij ||z_s,i - z_t,j||, floor)``, with no gradient.

    Only cross-domain pairs enter the maximum, as in the paper.

    >>> dynamic_blur(torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0]]))
    0.25
    >>> dynamic_blur(torch.zeros(2, 3), torch.zeros(1, 3))
    0.01
    """
    if factor <= 0 or floor <= 0:
        raise ValueError(
            f"factor and floor must be > 0, got factor={factor}, floor={floor}; "
            "the paper uses 0.05 and 0.01"
        )
    return max(factor * max_cross_distance(z_s, z_t), floor)


class SinkhornLoss(nn.Module):
    """:func:`sinkhorn_divergence` as a module, with a fixed or a dynamic blur.

    Args:
        blur: A fixed blur, or ``None`` for SIDDA's dynamic blur (:func:`dynamic_blur`).
        blur_factor: Factor of the dynamic blur.
        blur_floor: Lower bound of the dynamic blur.
        scaling: epsilon-scaling ratio.
        backend: Sinkhorn backend (:func:`sinkhorn_divergence`).

    >>> z_s, z_t = torch.randn(8, 4), torch.randn(8, 4)
    >>> bool(SinkhornLoss(blur=0.05)(z_s, z_t) == sinkhorn_divergence(z_s, z_t, blur=0.05))
    True
    """

    def __init__(
        self,
        *,
        blur: float | None = None,
        blur_factor: float = 0.05,
        blur_floor: float = 0.01,
        scaling: float = 0.9,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.blur = blur
        self.blur_factor = blur_factor
        self.blur_floor = blur_floor
        self.scaling = scaling
        self.backend = backend

    def resolve_blur(self, z_s: Tensor, z_t: Tensor) -> float:
        """The blur used for this pair of batches."""
        if self.blur is not None:
            return float(self.blur)
        return dynamic_blur(z_s, z_t, factor=self.blur_factor, floor=self.blur_floor)

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:  # noqa: D102
        return sinkhorn_divergence(
            z_s, z_t, blur=self.resolve_blur(z_s, z_t), scaling=self.scaling,
            backend=self.backend,
        )


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
        blur_factor: Factor of the dynamic blur (0.05 in the paper).
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
        blur_factor: float = 0.05,
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

    def forward(self, logits_s: Tensor, y_s: Tensor, z_s: Tensor, z_t: Tensor) -> SIDDAOutput:
        """Evaluate the loss.

        Args:
            logits_s: Source logits, shape (B_s, K).
            y_s: Source labels, shape (B_s,), int64.
            z_s: Source latents, shape (B_s, D).
            z_t: Target latents, shape (B_t, D).
        """
        ce = F.cross_entropy(logits_s, y_s)
        max_distance = max_cross_distance(z_s, z_t)
        sk = self.sinkhorn
        if sk.blur is not None:
            blur = float(sk.blur)
        else:
            blur = max(sk.blur_factor * max_distance, sk.blur_floor)
        da = sinkhorn_divergence(
            z_s.float(), z_t.float(), blur=blur, scaling=sk.scaling, backend=sk.backend
        )
        return SIDDAOutput(
            total=self.weigh(ce, da),
            ce=ce,
            da=da,
            blur=blur,
            max_distance=max_distance,
            eta_1=self.eta_1.item(),
            eta_2=self.eta_2.item(),
        )
