r"""Temperature scaling (Guo et al., 2017): :math:`\mathrm{softmax}(z / T)` with one fitted T.

Shapes as in :mod:`sidda.metrics`: ``logits`` (N, K), ``labels`` (N,). Fit T on **source
validation** logits only (:func:`fit_temperature`), then apply it anywhere
(:func:`apply_temperature`); :func:`temperature_nll` is the objective of the fit,
:math:`\mathrm{NLL}(T) = -\frac1N\sum_i \log\mathrm{softmax}(z_i/T)_{y_i}`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from sidda.metrics.validation import ArrayLike, check_int, check_labels, check_scores, out_dtype

__all__ = ["apply_temperature", "fit_temperature", "temperature_nll"]

_T_BOUNDS = (0.05, 20.0)  # temperature search interval of fit_temperature


def _check_temperature(temperature: Any) -> float:
    if isinstance(temperature, Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature!r}; "
            f"use the float returned by fit_temperature"
        )
    return float(temperature)


def apply_temperature(logits: ArrayLike, temperature: float) -> Tensor:
    r"""Temperature-scaled probabilities :math:`\mathrm{softmax}(z / T)` along classes.

    Args:
        logits: (N, K) logits.
        temperature: T > 0, typically from :func:`fit_temperature`.

    Returns:
        (N, K) probabilities in the dtype of ``logits``.

    Example:
        >>> apply_temperature(torch.tensor([[2.0, 0.0]]), 2.0)
        tensor([[0.7311, 0.2689]])
    """
    logits = check_scores(logits, "logits")
    return torch.softmax(logits / _check_temperature(temperature), dim=1)



def _nll(logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """NLL of softmax(logits / T), float64, log-softmax (exact for large logits); no checks."""
    return F.cross_entropy(logits.double() / temperature, labels)


def temperature_nll(logits: ArrayLike, labels: ArrayLike, temperature: float = 1.0) -> Tensor:
    r"""Mean negative log-likelihood of :math:`\mathrm{softmax}(z / T)`, from the logits.

    The objective :func:`fit_temperature` minimises. Computed in float64 with a log-softmax, so
    unlike :func:`~sidda.metrics.negative_log_likelihood` on probabilities it needs no floor.

    Args:
        logits: (N, K) logits.
        labels: (N,) true class indices.
        temperature: T > 0.

    Returns:
        0-d tensor in the dtype of ``logits``, >= 0.

    Example:
        >>> temperature_nll(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), 2.0)  # log 2
        tensor(0.6931)
    """
    logits = check_scores(logits, "logits")
    labels = check_labels(labels, logits.shape[0], logits.shape[1]).to(logits.device)
    return _nll(logits, labels, _check_temperature(temperature)).to(out_dtype(logits))


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, max_iter: int = 200) -> float:
    r"""Fit the temperature of temperature scaling (Guo et al., 2017).

    .. math:: T^\star = \arg\min_{T>0} -\frac1N\sum_i \log\mathrm{softmax}(z_i/T)_{y_i}

    The NLL is convex in :math:`1/T`, hence unimodal in :math:`\log T`, so a deterministic
    golden-section search over :math:`\log T \in [\log 0.05, \log 20]` finds the minimum.
    The result is compared with :math:`T = 1` and the better one is returned, so the fitted
    NLL never exceeds the unscaled one. A :class:`RuntimeWarning` is raised when the optimum
    lies at a bound (e.g. perfectly separated logits, whose NLL falls as T -> 0).

    Fit on **source validation** logits only. Fitting on target data or on test labels turns
    the calibration numbers into a probe of the evaluated set, as the authors'
    ``test_calibration.py`` does.

    Args:
        logits: (N, K) validation logits.
        labels: (N,) validation class indices.
        max_iter: maximum number of golden-section steps, >= 1 (about 45 reach 1e-8 in log T).

    Returns:
        The temperature T as a Python float.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(4000, 3, generator=g)
        >>> y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
        >>> round(fit_temperature(2 * z, y), 1)  # logits twice too sharp
        2.0
    """
    max_iter = check_int(max_iter, "max_iter", 1)
    logits = check_scores(logits, "logits").double()
    labels = check_labels(labels, logits.shape[0], logits.shape[1]).to(logits.device)

    def nll(log_t: float) -> float:
        return float(_nll(logits, labels, math.exp(log_t)))

    lo, hi = math.log(_T_BOUNDS[0]), math.log(_T_BOUNDS[1])
    a, b = lo, hi
    inv_phi = (math.sqrt(5) - 1) / 2
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(max_iter):
        if b - a < 1e-9:
            break
        if fc <= fd:  # minimum in [a, d]
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = nll(c)
        else:  # minimum in [c, b]
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = nll(d)
    log_t = (a + b) / 2
    if nll(0.0) <= nll(log_t):
        return 1.0
    if min(log_t - lo, hi - log_t) < 1e-3:
        warnings.warn(
            f"fit_temperature hit the search bound T={math.exp(log_t):.3g} (interval "
            f"{_T_BOUNDS}); the validation logits are separable or degenerate, so use more or "
            f"harder validation data",
            RuntimeWarning,
            stacklevel=2,
        )
    return math.exp(log_t)

