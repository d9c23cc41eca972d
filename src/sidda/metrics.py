r"""Classification and calibration metrics, functional and tensor-in.

Shapes used throughout: ``N`` samples, ``K`` classes, ``D`` latent features.

* ``probs`` (N, K): class probabilities, each row on the simplex (``softmax(logits, dim=1)``).
* ``logits`` / ``scores`` (N, K): unnormalised scores; only their argmax matters for accuracy.
* ``labels`` (N,): integer class indices in ``0..K-1``.

Every function also accepts NumPy arrays (converted with :func:`torch.as_tensor`) and returns
0-d tensors, a ``NamedTuple`` or, for reports, plain Python objects. Scalars come back in the
floating dtype of the input (``probs`` or ``logits``) but are accumulated in float64.

Two families of calibration numbers live here (see docs/evaluation.md, "The paper-compatible
numbers"):

* **Standard** - :func:`expected_calibration_error` (equal-width binned ECE),
  :func:`brier_score` (multiclass Brier), :func:`negative_log_likelihood`, and temperature
  scaling (:func:`fit_temperature`, :func:`apply_temperature`) fitted on *source validation*
  logits. Report these for the network.
* **Paper-compatible** - :func:`paper_ece`, :func:`paper_brier` and
  :func:`paper_probe_calibration` reproduce the SIDDA authors' definitions so numbers can be
  compared with the paper. They are not the standard quantities; see each docstring.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

__all__ = [
    "ProbeResult",
    "ReliabilityBins",
    "accuracy",
    "apply_temperature",
    "brier_score",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "paper_brier",
    "paper_ece",
    "paper_probe_calibration",
    "reliability_bins",
]

ArrayLike = Tensor | np.ndarray
_SIMPLEX_ATOL = 1e-3  # tolerance on row sums of probs; catches logits passed by mistake
_T_BOUNDS = (0.05, 20.0)  # temperature search interval of fit_temperature


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a reliability diagram (``n_bins`` equal-width bins on (0, 1])."""

    edges: Tensor  #: (n_bins + 1,) bin edges b / n_bins, b = 0..n_bins
    confidence: Tensor  #: (n_bins,) mean max-probability per bin; NaN where empty
    accuracy: Tensor  #: (n_bins,) fraction correct per bin; NaN where empty
    counts: Tensor  #: (n_bins,) int64 number of samples per bin


class ProbeResult(NamedTuple):
    """Output of :func:`paper_probe_calibration`."""

    probs: Tensor  #: (N, K) float64 out-of-fold probe probabilities
    ece_paper: Tensor  #: 0-d, :func:`paper_ece` of ``probs``
    brier_paper: Tensor  #: 0-d, :func:`paper_brier` of ``probs``
    accuracy: Tensor  #: 0-d, out-of-fold probe accuracy


# --------------------------------------------------------------------------- validation


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} must be a torch.Tensor or a numeric NumPy array, got {type(x).__name__}; "
            f"convert it with np.asarray(...) first"
        ) from err


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_scores(x: Any, name: str) -> Tensor:
    """(N, K) floating and finite, N >= 1, K >= 1."""
    x = _as_tensor(x, name)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape (N, K) with N >= 1 samples and K >= 1 classes, got shape "
            f"{tuple(x.shape)}; for a single sample use {name}[None, :]"
        )
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}; use .float()")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values; remove or fix those samples")
    return x


def _check_probs(probs: Any) -> Tensor:
    """(N, K) with rows on the probability simplex."""
    probs = _check_scores(probs, "probs")
    lo, hi = float(probs.min()), float(probs.max())
    row_sums = probs.double().sum(dim=1)
    if (
        lo < -_SIMPLEX_ATOL
        or hi > 1 + _SIMPLEX_ATOL
        or not bool(((row_sums - 1).abs() <= _SIMPLEX_ATOL).all())
    ):
        raise ValueError(
            f"probs must be probabilities with rows summing to 1, got values in [{lo:.4g}, "
            f"{hi:.4g}] and row sums in [{float(row_sums.min()):.4g}, "
            f"{float(row_sums.max()):.4g}]; pass softmax(logits, dim=1), not logits"
        )
    return probs


def _check_labels(labels: Any, n: int, num_classes: int, name: str = "labels") -> Tensor:
    """(n,) integer in 0..num_classes-1, returned as int64."""
    labels = _as_tensor(labels, name)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer class indices, got dtype {labels.dtype}; use .long()"
        )
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} must have shape ({n},) to match the {n} samples, got shape "
            f"{tuple(labels.shape)}; pass one class index per sample (not one-hot)"
        )
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1} for {num_classes} classes, got values in "
            f"[{lo}, {hi}]; check the label encoding or num_classes"
        )
    return labels.long()


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()


def _predictions(preds: Any, num_classes: int) -> Tensor:
    """(N,) integer predictions, or argmax of (N, K) scores."""
    preds = _as_tensor(preds, "preds")
    if preds.ndim == 2:
        if preds.shape[1] != num_classes:
            raise ValueError(
                f"preds scores have {preds.shape[1]} columns but num_classes={num_classes}; "
                f"pass (N,) predicted labels or (N, {num_classes}) scores"
            )
        preds = _check_scores(preds, "preds").argmax(dim=1)
    if preds.ndim != 1 or preds.shape[0] < 1:
        raise ValueError(
            f"preds must be (N,) predicted labels or (N, K) scores with N >= 1, got shape "
            f"{tuple(preds.shape)}"
        )
    return _check_labels(preds, preds.shape[0], num_classes, name="preds")


# --------------------------------------------------------------------------- classification


def accuracy(probs_or_logits: ArrayLike, labels: ArrayLike) -> Tensor:
    r"""Top-1 accuracy, :math:`\frac1N \sum_i 1[\arg\max_k s_{ik} = y_i]`.

    Args:
        probs_or_logits: (N, K) scores; probabilities and logits give the same answer. Ties go
            to the lowest class index (``torch.argmax``).
        labels: (N,) integer class indices.

    Returns:
        0-d tensor in [0, 1].

    Example:
        >>> accuracy(torch.tensor([[2.0, -1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        tensor(0.5000)
    """
    scores = _check_scores(probs_or_logits, "probs_or_logits")
    labels = _check_labels(labels, scores.shape[0], scores.shape[1]).to(scores.device)
    correct = (scores.argmax(dim=1) == labels).double()  # (N,)
    return correct.mean().to(_out_dtype(scores))


def confusion_matrix(preds: ArrayLike, labels: ArrayLike, *, num_classes: int) -> Tensor:
    r"""Confusion matrix :math:`C_{ij} = \#\{n : y_n = i,\ \hat y_n = j\}`.

    Rows are true classes and columns predicted classes, as in ``sklearn.metrics``.

    Args:
        preds: (N,) predicted class indices, or (N, K) scores (argmax is taken).
        labels: (N,) true class indices.
        num_classes: K, so that absent classes still get a row and a column.

    Returns:
        (K, K) int64 tensor whose entries sum to N.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), num_classes=2)
        tensor([[1, 1],
                [0, 1]])
    """
    num_classes = _check_int(num_classes, "num_classes", 1)
    preds = _predictions(preds, num_classes)
    labels = _check_labels(labels, preds.shape[0], num_classes).to(preds.device)
    flat = labels * num_classes + preds  # (N,) index into the flattened (K, K) grid
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(
    preds: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    r"""Per-class precision, recall, F1 and support, with macro/weighted averages and accuracy.

    With :math:`C` from :func:`confusion_matrix`, for class :math:`k`:
    :math:`P_k = C_{kk}/\sum_i C_{ik}`, :math:`R_k = C_{kk}/\sum_j C_{kj}`,
    :math:`F_k = 2 C_{kk} / (\sum_i C_{ik} + \sum_j C_{kj})`. A ratio whose denominator is
    zero (a class never predicted, or never present) is reported as 0.0, like sklearn's
    ``zero_division=0``. The macro average is the unweighted mean over all K classes, absent
    ones included; the weighted average weights by support.

    The layout is that of ``sklearn.metrics.classification_report(output_dict=True,
    labels=range(K))`` used by the reference ``test.py``, so reports can be compared with the
    authors' YAML files: keys are class names, ``"accuracy"``, ``"macro avg"`` and
    ``"weighted avg"``; metric keys are ``"precision"``, ``"recall"``, ``"f1-score"`` and
    ``"support"``. All values are Python floats (support: int), so the dict is JSON-ready.

    Args:
        preds: (N,) predicted class indices, or (N, K) scores.
        labels: (N,) true class indices.
        num_classes: K.
        class_names: K unique names used as keys; default ``"0"``, ``"1"``, ...

    Returns:
        The report dict described above.

    Example:
        >>> r = classification_report(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]),
        ...                           num_classes=2, class_names=["cat", "dog"])
        >>> r["cat"], r["accuracy"]
        ({'precision': 1.0, 'recall': 0.5, 'f1-score': 0.6666666666666666, 'support': 2}, 0.6666666666666666)
    """  # noqa: E501
    cm = confusion_matrix(preds, labels, num_classes=num_classes).double().cpu()
    names = [str(k) for k in range(num_classes)] if class_names is None else list(class_names)
    reserved = {"accuracy", "macro avg", "weighted avg"}
    if len(names) != num_classes or len(set(names)) != num_classes or reserved & set(names):
        raise ValueError(
            f"class_names must be {num_classes} unique names other than {sorted(reserved)}, "
            f"got {names!r}"
        )

    def ratio(num: Tensor, den: Tensor) -> Tensor:  # 0.0 where den == 0
        return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))

    tp, predicted, support = cm.diag(), cm.sum(dim=0), cm.sum(dim=1)  # each (K,)
    precision, recall = ratio(tp, predicted), ratio(tp, support)
    f1 = ratio(2 * tp, predicted + support)
    per_class = torch.stack([precision, recall, f1])  # (3, K)
    report: dict[str, Any] = {}
    for k, name in enumerate(names):
        p, r, f = per_class[:, k].tolist()
        report[name] = {"precision": p, "recall": r, "f1-score": f, "support": int(support[k])}
    n = int(support.sum())
    report["accuracy"] = float(tp.sum() / n)
    for key, avg in (
        ("macro avg", per_class.mean(dim=1)),
        ("weighted avg", per_class @ support / n),
    ):
        p, r, f = avg.tolist()
        report[key] = {"precision": p, "recall": r, "f1-score": f, "support": n}
    return report


# --------------------------------------------------------------------------- calibration


def _confidence_correct(probs: Any, labels: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Validated probs plus float64 (N,) confidence max_k p_ik and (N,) 0/1 correctness."""
    probs = _check_probs(probs)
    labels = _check_labels(labels, probs.shape[0], probs.shape[1]).to(probs.device)
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
    n_bins = _check_int(n_bins, "n_bins", 1)
    probs, conf, correct = _confidence_correct(probs, labels)
    edges, conf_b, acc_b, counts = _bin_stats(conf, correct, n_bins)
    dtype = _out_dtype(probs)
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
    n_bins = _check_int(n_bins, "n_bins", 1)
    probs, conf, correct = _confidence_correct(probs, labels)
    _, conf_b, acc_b, counts = _bin_stats(conf, correct, n_bins)
    weights = counts.double() / conf.shape[0]  # (n_bins,) n_b / N
    gaps = torch.where(counts > 0, (acc_b - conf_b).abs(), torch.zeros_like(conf_b))
    return (weights * gaps).sum().to(_out_dtype(probs))


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
    probs = _check_probs(probs)
    labels = _check_labels(labels, probs.shape[0], probs.shape[1]).to(probs.device)
    onehot = F.one_hot(labels, probs.shape[1]).double()  # (N, K)
    per_sample = ((probs.double() - onehot) ** 2).sum(dim=1)  # (N,)
    out = per_sample.mean() if reduction == "mean" else per_sample
    return out.to(_out_dtype(probs))


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
    probs = _check_probs(probs)
    labels = _check_labels(labels, probs.shape[0], probs.shape[1]).to(probs.device)
    p_true = probs.double().gather(1, labels[:, None]).squeeze(1)  # (N,)
    return -p_true.clamp(min=eps).log().mean().to(_out_dtype(probs))


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
    return (conf - correct).abs().mean().to(_out_dtype(probs))


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
    probs = _check_probs(probs)
    return brier_score(probs, labels) / probs.shape[1]


# --------------------------------------------------------------------------- temperature


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
    logits = _check_scores(logits, "logits")
    return torch.softmax(logits / _check_temperature(temperature), dim=1)


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
    max_iter = _check_int(max_iter, "max_iter", 1)
    logits = _check_scores(logits, "logits").double()
    labels = _check_labels(labels, logits.shape[0], logits.shape[1]).to(logits.device)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

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


# --------------------------------------------------------------------------- paper probe


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
    :func:`expected_calibration_error` and :func:`brier_score` of the network as the result.

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
        :class:`ProbeResult` with out-of-fold ``probs`` (N, K) and their :func:`paper_ece`,
        :func:`paper_brier` and accuracy.

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

    n_splits = _check_int(n_splits, "n_splits", 2)
    x = _check_scores(latents, "latents").detach().cpu().double().numpy()  # (N, D)
    n = x.shape[0]
    y_t = _as_tensor(labels, "labels")
    num_classes = int(y_t.max()) + 1 if y_t.numel() and not y_t.dtype.is_floating_point else 1
    y = _check_labels(y_t, n, num_classes).cpu().numpy()  # (N,)
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
        ece_paper=paper_ece(probs_t, y_out),
        brier_paper=paper_brier(probs_t, y_out),
        accuracy=accuracy(probs_t, y_out),
    )
