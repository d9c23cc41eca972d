r"""Calibration of a trained network: temperature scaling and the paper's probe protocol.

* :func:`fit_source_temperature` - temperature scaling (Guo et al., 2017) with :math:`T`
  fitted on the **source validation split only** (:func:`sidda.metrics.fit_temperature`);
  no target label is read. :func:`temperature_metrics` - ECE, Brier and NLL of
  :math:`\mathrm{softmax}(z/T)` on a test domain.
* :func:`check_bins` - the bin count of an evaluation's ECE (1..:data:`MAX_BINS`).
* :func:`paper_compatible` - the authors' protocol (``test_calibration.py``): a
  logistic-regression probe on the latents, sigmoid-calibrated
  (:func:`paper_probe_calibration`, scikit-learn), scored with their per-sample "ECE" and
  Brier / K, but cross-fitted so that no image is scored by a probe that saw its label. The
  probe reads the labels of the domain it scores (target labels for the target): it is a
  comparison with the paper, not a result (docs/evaluation.md).

The formulas themselves are in :mod:`sidda.metrics`; this module composes them.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from sidda import metrics
from sidda.errors import InputError, short_repr
from sidda.evaluate.predict import Predictions
from sidda.evaluate.threads import single_blas_thread
from sidda.metrics import MAX_BINS
from sidda.metrics.validation import ArrayLike, as_tensor, check_int, check_labels, check_scores

__all__ = [
    "MAX_BINS",
    "ProbeResult",
    "check_bins",
    "fit_source_temperature",
    "paper_compatible",
    "paper_probe_calibration",
    "temperature_metrics",
]


def check_bins(n_bins: object) -> int:
    """``n_bins`` if it is an integer in 1..:data:`MAX_BINS`, else :class:`InputError`.

    >>> check_bins(15)
    15
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 1 <= n_bins <= MAX_BINS:
        raise InputError(
            f"--bins (n_bins) must be an integer in 1..{MAX_BINS}, got {short_repr(n_bins)}; "
            "the default is 15"
        )
    return n_bins

logger = logging.getLogger(__name__)


def fit_source_temperature(val_s: Predictions) -> dict:
    """Fit temperature scaling on the **source validation** predictions (JSON-ready).

    Takes only source-validation logits and labels, so no target label can reach the fit.

    Returns:
        ``{"value": T, "fitted_on": "source validation split", "n": N, "val_nll_before",
        "val_nll_after"}`` (plus ``"warning"`` when T hit a search bound, which is also
        logged), or ``{"value": None, "reason": ...}`` without a labelled split.
    """
    if val_s.labels is None or len(val_s.logits) == 0:
        return {"value": None, "fitted_on": "source validation split",
                "reason": "no labelled source validation images (data.val_fraction = 0?)"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = metrics.fit_temperature(val_s.logits, val_s.labels)
    notes = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    for note in notes:
        logger.warning("temperature scaling: %s", note)
    before = float(metrics.temperature_nll(val_s.logits.double(), val_s.labels, 1.0))
    after = float(metrics.temperature_nll(val_s.logits.double(), val_s.labels, t))
    out = {"value": t, "fitted_on": "source validation split", "n": len(val_s.logits),
           "val_nll_before": before, "val_nll_after": after}
    if notes:
        out["warning"] = "; ".join(notes)
    return out


def temperature_metrics(
    logits: Tensor, labels: Tensor, temperature: float, *, n_bins: int = 15
) -> dict:
    """ECE, Brier and NLL of ``softmax(logits / T)`` (accuracy does not change with T)."""
    probs = metrics.apply_temperature(logits.double(), temperature)  # (N, K)
    return {
        "ece": float(metrics.expected_calibration_error(probs, labels, n_bins=n_bins)),
        "brier": float(metrics.brier_score(probs, labels)),
        "nll": float(metrics.negative_log_likelihood(probs, labels)),
    }


def paper_compatible(pred: Predictions, *, n_splits: int = 5, random_state: int = 0) -> dict:
    """The authors' calibration protocol and formulas (``test_calibration.py``), cross-fitted.

    * ``probe_*``: a ``CalibratedClassifierCV(LogisticRegression, method="sigmoid")`` probe on
      the latents, scored out of fold (``n_splits`` stratified folds) with the paper's
      per-sample "ECE" (:func:`sidda.metrics.paper_ece`) and Brier / K
      (:func:`sidda.metrics.paper_brier`). It reads the labels of this domain.
    * ``network_*``: the same two formulas on the network's own softmax, which separates the
      effect of the formulas from the effect of the probe.

    A domain too small for the folds gets ``{"probe_error": reason}`` instead of the probe.
    """
    if pred.labels is None:
        return {"reason": "no labels in this domain"}
    out: dict = {
        "protocol": f"LR probe on latents, sigmoid calibration, {n_splits}-fold out-of-fold; "
                    "ECE = mean |conf - correct|, Brier / K",
        "network_ece": float(metrics.paper_ece(pred.probs, pred.labels)),
        "network_brier": float(metrics.paper_brier(pred.probs, pred.labels)),
    }
    try:
        with single_blas_thread():
            res = paper_probe_calibration(
                pred.latents.double(), pred.labels, n_splits=n_splits, random_state=random_state
            )
    except ValueError as e:
        out["probe_error"] = str(e)
        return out
    out.update(probe_accuracy=float(res.accuracy), probe_ece=float(res.ece_paper),
               probe_brier=float(res.brier_paper))
    return out


class ProbeResult(NamedTuple):
    """Output of :func:`paper_probe_calibration`."""

    probs: Tensor  #: (N, K) float64 out-of-fold probe probabilities
    ece_paper: Tensor  #: 0-d, :func:`~sidda.metrics.paper_ece` of ``probs``
    brier_paper: Tensor  #: 0-d, :func:`~sidda.metrics.paper_brier` of ``probs``
    accuracy: Tensor  #: 0-d, out-of-fold probe accuracy


def paper_probe_calibration(
    latents: ArrayLike,
    labels: ArrayLike,
    *,
    n_splits: int = 5,
    random_state: int | np.random.Generator | None = 0,
) -> ProbeResult:
    r"""The authors' logistic-regression probe protocol (``test_calibration.py``), cross-fitted.

    Paper-compatible only. This measures a **probe fitted on the latents with the labels of
    the evaluated domain** (target labels for the target domain), not the network's own
    softmax: use it only to compare with the paper, and report
    :func:`~sidda.metrics.expected_calibration_error` and :func:`~sidda.metrics.brier_score`
    of the network as the result.

    The reference fits ``CalibratedClassifierCV(LogisticRegression(max_iter=1000),
    method="sigmoid")`` on the test latents and labels and scores the same latents (in-sample).
    Here the data are split into ``n_splits`` stratified folds; each fold is scored by a probe
    fitted on the other folds, so no sample is scored by a probe that saw its label. The
    probe uses sklearn's inner 5-fold Platt calibration (``cv=5, ensemble=True``), which needs
    at least 5 samples of every class in each outer training part. With K = max(labels) + 1,
    classes absent from the data get probability 0.

    Args:
        latents: (N, D) features, e.g. the network's 256-d latent vectors.
        labels: (N,) class indices of the evaluated domain.
        n_splits: number of outer folds, >= 2.
        random_state: seed of the outer fold shuffle (int, ``np.random.Generator`` or None).

    Returns:
        :class:`ProbeResult` with out-of-fold ``probs`` (N, K) and their
        :func:`~sidda.metrics.paper_ece`, :func:`~sidda.metrics.paper_brier` and accuracy.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = np.r_[rng.normal(-3, 1, (20, 2)), rng.normal(3, 1, (20, 2))]  # (40, 2)
        >>> y = np.r_[np.zeros(20, int), np.ones(20, int)]
        >>> float(paper_probe_calibration(x, y).accuracy)
        1.0
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    n_splits = check_int(n_splits, "n_splits", 2)
    x = check_scores(latents, "latents").detach().cpu().double().numpy()  # (N, D)
    n = x.shape[0]
    y_t = as_tensor(labels, "labels")
    num_classes = int(y_t.max()) + 1 if y_t.numel() and not y_t.dtype.is_floating_point else 1
    y = check_labels(y_t, n, num_classes).cpu().numpy()  # (N,)
    if isinstance(random_state, np.random.Generator):
        random_state = int(random_state.integers(2**31 - 1))
    counts = np.bincount(y, minlength=num_classes)
    present = counts[counts > 0]
    if present.size < 2 or present.min() < n_splits:
        raise ValueError(
            f"paper_probe_calibration needs >= 2 classes with >= n_splits={n_splits} samples "
            f"each, got class counts {counts.tolist()}; add samples or lower n_splits"
        )
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    probs = np.zeros((n, num_classes))
    for train, test in folds.split(x, y):
        train_counts = np.bincount(y[train], minlength=num_classes)[counts > 0]
        if train_counts.min() < 5:
            raise ValueError(
                f"an outer training part has only {train_counts.min()} samples of some class, "
                f"but the inner 5-fold Platt calibration needs >= 5; give every class at least "
                f"{math.ceil(5 * n_splits / (n_splits - 1)) + 1} samples or lower n_splits"
            )
        probe = CalibratedClassifierCV(
            estimator=LogisticRegression(max_iter=1000), method="sigmoid", cv=5, ensemble=True
        )
        probe.fit(x[train], y[train])
        probs[np.ix_(test, probe.classes_)] = probe.predict_proba(x[test])  # (n_test, K_seen)
    probs_t, y_out = torch.from_numpy(probs), torch.from_numpy(y)
    return ProbeResult(
        probs=probs_t,
        ece_paper=metrics.paper_ece(probs_t, y_out),
        brier_paper=metrics.paper_brier(probs_t, y_out),
        accuracy=metrics.accuracy(probs_t, y_out),
    )
