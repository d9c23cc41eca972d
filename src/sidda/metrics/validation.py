"""Argument checks shared by the metrics (and by :mod:`sidda.evaluate.calibration`).

Each check takes what a user passed, returns it as a tensor of the expected shape and dtype,
and otherwise raises a :class:`ValueError` that says what was received and how to fix it.
Shapes as in :mod:`sidda.metrics`: ``N`` samples, ``K`` classes. Not part of the public API
(``sidda.metrics.__all__``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ArrayLike",
    "as_tensor",
    "check_int",
    "check_labels",
    "check_probs",
    "check_scores",
    "out_dtype",
    "predicted_labels",
]

ArrayLike = Tensor | np.ndarray
_SIMPLEX_ATOL = 1e-3  # tolerance on row sums of probs; catches logits passed by mistake


def as_tensor(x: Any, name: str) -> Tensor:
    """``x`` as a tensor (NumPy arrays and nested lists are converted, tensors kept).

    >>> as_tensor(np.array([1, 2]), "labels")
    tensor([1, 2])
    """
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} must be a torch.Tensor or a numeric NumPy array, got {type(x).__name__}; "
            f"convert it with np.asarray(...) first"
        ) from err


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_scores(x: Any, name: str) -> Tensor:
    """(N, K) floating and finite, N >= 1, K >= 1."""
    x = as_tensor(x, name)
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


def check_probs(probs: Any) -> Tensor:
    """(N, K) with rows on the probability simplex (up to 1e-3)."""
    probs = check_scores(probs, "probs")
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


def check_labels(labels: Any, n: int, num_classes: int, name: str = "labels") -> Tensor:
    """(n,) integer in 0..num_classes-1, returned as int64."""
    labels = as_tensor(labels, name)
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


def out_dtype(x: Tensor) -> torch.dtype:
    """The floating dtype a metric of ``x`` is returned in."""
    return x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()


def predicted_labels(preds: Any, num_classes: int) -> Tensor:
    """(N,) integer predictions, or the argmax of (N, K) scores."""
    preds = as_tensor(preds, "preds")
    if preds.ndim == 2:
        if preds.shape[1] != num_classes:
            raise ValueError(
                f"preds scores have {preds.shape[1]} columns but num_classes={num_classes}; "
                f"pass (N,) predicted labels or (N, {num_classes}) scores"
            )
        preds = check_scores(preds, "preds").argmax(dim=1)
    if preds.ndim != 1 or preds.shape[0] < 1:
        raise ValueError(
            f"preds must be (N,) predicted labels or (N, K) scores with N >= 1, got shape "
            f"{tuple(preds.shape)}"
        )
    return check_labels(preds, preds.shape[0], num_classes, name="preds")
