r"""Calibration metrics: reliability bins, ECE, Brier, NLL, and the paper's two formulas.

Shapes as in :mod:`sidda.metrics`: ``probs`` (N, K) rows on the simplex, ``labels`` (N,).

* **Standard** - :func:`reliability_bins` and :func:`expected_calibration_error` (equal-width,
  right-closed confidence bins), :func:`brier_score` (multiclass),
  :func:`negative_log_likelihood`. Report these for the network.
* **Paper-compatible** - :func:`paper_ece` and :func:`paper_brier` reproduce the SIDDA
  authors' definitions (``test_calibration.py``) so numbers can be compared with the paper;
  they are not the standard quantities (docs/evaluation.md, "The paper-compatible numbers").
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from sidda.metrics.validation import (
    ArrayLike,
    check_int,
    check_labels,
    check_probs,
    out_dtype,
)

__all__ = [
    "MAX_BINS",
    "ReliabilityBins",
    "brier_score",
    "expected_calibration_error",
    "negative_log_likelihood",
    "paper_brier",
    "paper_ece",
    "reliability_bins",
]


#: Most bins sidda's evaluations use for the ECE and draw in a reliability diagram.
MAX_BINS = 1000


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a reliability diagram (``n_bins`` equal-width bins on (0, 1])."""

    edges: Tensor  #: (n_bins + 1,) bin edges b / n_bins, b = 0..n_bins
    confidence: Tensor  #: (n_bins,) mean max-probability per bin; NaN where empty
    accuracy: Tensor  #: (n_bins,) fraction correct per bin; NaN where empty
    counts: Tensor  #: (n_bins,) int64 number of samples per bin



def _confidence_correct(probs: Any, labels: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Validated probs plus float64 (N,) confidence max_k p_ik and (N,) 0/1 correctness."""
    probs = check_probs(probs)
    labels = check_labels(labels, probs.shape[0], probs.shape[1]).to(probs.device)
    conf, pred = probs.double().max(dim=1)  # (N,), (N,)
    return probs, conf, (pred == labels).double()


def _bin_stats(conf: Tensor, correct: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """float64 edges (n+1,), bin confidence (n,), bin accuracy (n,) (NaN if empty), counts (n,)."""
    edges = torch.arange(n_bins + 1, dtype=torch.float64, device=conf.device) / n_bins
    # bucketize(right=False) on the interior edges gives b with edges[b] < c <= edges[b+1]
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # (N,) in 0..n_bins-1
    counts = torch.bincount(idx, minlength=n_bins)  # (n_bins,)
    zeros = torch.zeros(n_bins, dtype=torch.float64, device=conf.device)
    denom = counts.double().clamp(min=1)
    nan = torch.full_like(zeros, float("nan"))
    conf_b = torch.where(counts > 0, zeros.index_add(0, idx, conf) / denom, nan)
    acc_b = torch.where(counts > 0, zeros.index_add(0, idx, correct) / denom, nan)
    return edges, conf_b, acc_b, counts


def reliability_bins(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15) -> ReliabilityBins:
    r"""Bin samples by confidence :math:`c_i = \max_k p_{ik}` into equal-width bins.

    Bin :math:`b \in \{0..n-1\}` is the right-closed interval :math:`(b/n, (b+1)/n]`; a
    confidence of exactly 0 (impossible on the simplex) is put in bin 0. For the samples
    :math:`B_b` of bin :math:`b`, ``confidence`` is :math:`\mathrm{conf}_b = \frac{1}{n_b}
    \sum_{i \in B_b} c_i` and ``accuracy`` is :math:`\mathrm{acc}_b = \frac{1}{n_b}\sum_{i\in B_b}
    1[\hat y_i = y_i]`. Edges are exact ``b / n`` in float64 and comparisons are done in
    float64.

    Args:
        probs: (N, K) probabilities.
        labels: (N,) true class indices.
        n_bins: number of bins, >= 1.

    Returns:
        :class:`ReliabilityBins` with ``edges`` (n_bins + 1,), ``confidence``, ``accuracy``
        (n_bins,), NaN for empty bins, and int64 ``counts`` (n_bins,).

    Example:
        >>> rb = reliability_bins(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]),
        ...                       n_bins=2)
        >>> rb.counts, rb.accuracy
        (tensor([0, 2]), tensor([   nan, 0.5000]))
    """
    n_bins = check_int(n_bins, "n_bins", 1)
    probs, conf, correct = _confidence_correct(probs, labels)
    edges, conf_b, acc_b, counts = _bin_stats(conf, correct, n_bins)
    dtype = out_dtype(probs)
    return ReliabilityBins(edges.to(dtype), conf_b.to(dtype), acc_b.to(dtype), counts)


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15) -> Tensor:
    r"""Standard binned expected calibration error (Guo et al., 2017).

    .. math:: \mathrm{ECE} = \sum_{b=0}^{n-1} \frac{n_b}{N}\,|\mathrm{acc}_b - \mathrm{conf}_b|

    over the equal-width, right-closed confidence bins of :func:`reliability_bins` (empty bins
    contribute 0). This is the network-level ECE to report; the SIDDA paper's number is
    :func:`paper_ece`, which upper-bounds this one.

    Args:
        probs: (N, K) probabilities.
        labels: (N,) true class indices.
        n_bins: number of bins, >= 1 (15 is common; the reference code used 10).

    Returns:
        0-d tensor in [0, 1].

    Example:
        >>> probs = torch.tensor([[0.75, 0.25]] * 4)
        >>> expected_calibration_error(probs, torch.tensor([0, 0, 0, 1]))  # acc = conf = 0.75
        tensor(0.)
    """
    n_bins = check_int(n_bins, "n_bins", 1)
    probs, conf, correct = _confidence_correct(probs, labels)
    _, conf_b, acc_b, counts = _bin_stats(conf, correct, n_bins)
    weights = counts.double() / conf.shape[0]  # (n_bins,) n_b / N
    gaps = torch.where(counts > 0, (acc_b - conf_b).abs(), torch.zeros_like(conf_b))
    return (weights * gaps).sum().to(out_dtype(probs))


def brier_score(probs: ArrayLike, labels: ArrayLike, *, reduction: str = "mean") -> Tensor:
    r"""Multiclass Brier score :math:`\frac1N\sum_i\sum_k (p_{ik} - 1[y_i = k])^2`.

    Ranges over [0, 2]: 0 for confident correct one-hot predictions and 2 for confident wrong
    ones. This is the standard definition; the SIDDA paper divides it by K, see
    :func:`paper_brier`.

    Args:
        probs: (N, K) probabilities.
        labels: (N,) true class indices.
        reduction: ``"mean"`` for the score, ``"none"`` for the (N,) per-sample terms.

    Returns:
        0-d tensor, or (N,) tensor for ``reduction="none"``.

    Example:
        >>> brier_score(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
        tensor(0.)
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f'reduction must be "mean" or "none", got {reduction!r}')
    probs = check_probs(probs)
    labels = check_labels(labels, probs.shape[0], probs.shape[1]).to(probs.device)
    onehot = F.one_hot(labels, probs.shape[1]).double()  # (N, K)
    per_sample = ((probs.double() - onehot) ** 2).sum(dim=1)  # (N,)
    out = per_sample.mean() if reduction == "mean" else per_sample
    return out.to(out_dtype(probs))


def negative_log_likelihood(probs: ArrayLike, labels: ArrayLike, *, eps: float = 1e-12) -> Tensor:
    r"""Mean negative log-likelihood :math:`-\frac1N\sum_i \log\max(p_{i,y_i}, \epsilon)`.

    Args:
        probs: (N, K) probabilities.
        labels: (N,) true class indices.
        eps: floor on the true-class probability so a zero gives a finite value, > 0.

    Returns:
        0-d tensor, >= 0.

    Example:
        >>> negative_log_likelihood(torch.tensor([[0.5, 0.5]]), torch.tensor([1]))
        tensor(0.6931)
    """
    if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and 0 < eps < 1):
        raise ValueError(f"eps must be a float in (0, 1), got {eps!r}; e.g. 1e-12")
    probs = check_probs(probs)
    labels = check_labels(labels, probs.shape[0], probs.shape[1]).to(probs.device)
    p_true = probs.double().gather(1, labels[:, None]).squeeze(1)  # (N,)
    return -p_true.clamp(min=eps).log().mean().to(out_dtype(probs))


def paper_ece(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    r"""The SIDDA authors' "ECE": :math:`\frac1N\sum_i |\max_k p_{ik} - 1[\hat y_i = y_i]|`.

    Paper-compatible only (the authors' ``test_calibration.py``). Their code bins samples but
    adds the per-sample gap, so the bins cancel and the value does not depend on them. By the
    triangle inequality it is an upper bound of :func:`expected_calibration_error` for any
    binning, and it is not zero for a perfectly calibrated model. Report it next to the
    standard ECE, never instead of it.

    Args:
        probs: (N, K) probabilities.
        labels: (N,) true class indices.

    Returns:
        0-d tensor in [0, 1].

    Example:
        >>> paper_ece(torch.tensor([[0.75, 0.25]] * 4), torch.tensor([0, 0, 0, 1]))
        tensor(0.3750)
    """
    probs, conf, correct = _confidence_correct(probs, labels)
    return (conf - correct).abs().mean().to(out_dtype(probs))


def paper_brier(probs: ArrayLike, labels: ArrayLike) -> Tensor:
    r"""The SIDDA authors' "Brier": the mean over classes of one-vs-rest Brier scores.

    .. math:: \frac1K\sum_k \frac1N\sum_i (p_{ik} - 1[y_i=k])^2 = \mathrm{Brier}/K

    Paper-compatible only (the authors' ``test_calibration.py``): it equals :func:`brier_score`
    divided by K, so it shrinks with the number of classes.

    Args:
        probs: (N, K) probabilities.
        labels: (N,) true class indices.

    Returns:
        0-d tensor in [0, 2/K].

    Example:
        >>> paper_brier(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
        tensor(1.)
    """
    probs = check_probs(probs)
    return brier_score(probs, labels) / probs.shape[1]
