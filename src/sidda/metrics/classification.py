r"""Classification metrics: accuracy, confusion matrix, per-class report.

Shapes as in :mod:`sidda.metrics`: ``N`` samples, ``K`` classes; ``labels`` (N,) are integer
class indices and scores (N, K) are probabilities or logits (only their argmax matters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sidda.metrics.validation import (
    ArrayLike,
    check_int,
    check_labels,
    check_scores,
    out_dtype,
    predicted_labels,
)

__all__ = ["accuracy", "classification_report", "confusion_matrix"]


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
    scores = check_scores(probs_or_logits, "probs_or_logits")
    labels = check_labels(labels, scores.shape[0], scores.shape[1]).to(scores.device)
    correct = (scores.argmax(dim=1) == labels).double()  # (N,)
    return correct.mean().to(out_dtype(scores))


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
    num_classes = check_int(num_classes, "num_classes", 1)
    preds = predicted_labels(preds, num_classes)
    labels = check_labels(labels, preds.shape[0], num_classes).to(preds.device)
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
