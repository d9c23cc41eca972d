r"""How sidda computes the debiased Sinkhorn divergence itself: the ``"dense"`` and ``"blocked"``
backends of :func:`sidda.losses.sinkhorn_divergence` (what they compute, and when ``"auto"``
picks them, is documented there).

Both run geomloss's ``sinkhorn_loop`` for p = 2, ``reach=None``, ``debias=True`` and uniform
weights: the temperatures :math:`\varepsilon` go from the squared diameter of the two clouds
down to :math:`\text{blur}^2` by factors of :math:`\text{scaling}^2`
(:func:`_epsilon_schedule`); at each of them the four dual potentials
:math:`f_{ba}, g_{ab}, f_{aa}, g_{bb}` are updated symmetrically (the mean of the old value and
the soft-min of its partner), with

.. math::

    \operatorname{softmin}_\varepsilon(x_i; y, h) = -\varepsilon \log \sum_j
        \exp\!\big(h_j - \tfrac{1}{2\varepsilon}\|x_i - y_j\|^2\big),

and the result is
:math:`\langle a, f_{ba} - f_{aa}\rangle + \langle b, g_{ab} - g_{bb}\rangle`. Only the last,
extrapolated step carries a gradient (as geomloss does), through the first cloud of each cost.

* :func:`_sinkhorn_dense`: the four problems stacked into one batched (4, k, k) tensor, so that
  each temperature is a handful of tensor operations (run single-threaded,
  :func:`_torch_single_threaded`).
* :func:`_sinkhorn_blocked`: never holds a B x B matrix; every soft-min recomputes its costs
  block by block (:func:`_softmin`, rows per block from :data:`BLOCK_BYTES`) and the gradient of
  the last step is written out (:class:`_SoftMin`). Memory O((B_s + B_t) D + block).

A third loop solves a transport *plan* rather than a divergence: :func:`entropic_plan`, the
entropic plan between uniform marginals that DeepJDOT (:mod:`sidda.methods.deepjdot`) weighs
its joint cost with.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

BLOCK_BYTES = 32 << 20  # temporaries of one block of the "blocked" backend


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
def _torch_single_threaded():
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


@torch.no_grad()
def entropic_plan(cost: Tensor, *, epsilon: float, scaling: float = 0.9, tol: float = 1e-6,
                  max_iter: int = 1000) -> Tensor:
    r"""Entropic optimal transport plan between uniform marginals, by log-domain Sinkhorn.

    Epsilon-scaling from the cost's range down to ``epsilon`` (ratio ``scaling``, one
    iteration per temperature), then iterations at ``epsilon`` until
    :math:`\|\gamma\mathbf 1 - a\|_1 <` ``tol`` or ``max_iter`` of them. The plan is that of
    ``ot.sinkhorn(a, b, cost, reg=epsilon)``; no gradient flows through it.

    Args:
        cost: Cost matrix, shape (B_s, B_t).
        epsilon: Entropic regularisation, > 0, in the cost's units.
        scaling: Epsilon-scaling ratio in (0, 1).
        tol: Stop when the L1 error of the row marginals (mass misplaced) is below this.
        max_iter: Most iterations at ``epsilon``.

    Returns:
        The plan :math:`\gamma`, shape (B_s, B_t), rows summing to :math:`1/B_s` and columns to
        :math:`1/B_t`; all NaN when the cost is not finite (the training loop then skips
        the step).

    >>> plan = entropic_plan(torch.rand(3, 5), epsilon=0.05)
    >>> bool(torch.allclose(plan.sum(0), torch.full((5,), 0.2), atol=1e-6))
    True
    """
    if cost.ndim != 2 or cost.numel() == 0:
        raise ValueError(f"cost must be a non-empty (B_s, B_t) matrix, got {tuple(cost.shape)}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}; e.g. 0.1 * "
                         "cost.mean()")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}; e.g. 0.9")
    n_s, n_t = cost.shape
    log_a, log_b = -math.log(n_s), -math.log(n_t)
    f, g = cost.new_zeros(n_s), cost.new_zeros(n_t)  # dual potentials, in cost units

    def update_g(eps: float) -> Tensor:
        return eps * (log_b - torch.logsumexp((f[:, None] - cost) / eps, dim=0))

    eps = float(cost.max() - cost.min())
    if not math.isfinite(eps):  # a non-finite cost: a NaN plan, so the loop skips the step
        return torch.full_like(cost, math.nan)
    while eps > epsilon:  # annealing: one iteration per temperature
        f = eps * (log_a - torch.logsumexp((g[None, :] - cost) / eps, dim=1))
        g = update_g(eps)
        eps *= scaling
    eps = epsilon
    for _ in range(max_iter):
        lse = torch.logsumexp((g[None, :] - cost) / eps, dim=1)  # (B_s,)
        err = float((torch.exp(f / eps + lse) - 1.0 / n_s).abs().sum())
        if err < tol or not math.isfinite(err):
            break
        f = eps * (log_a - lse)
        g = update_g(eps)
    return torch.exp((f[:, None] + g[None, :] - cost) / eps)
