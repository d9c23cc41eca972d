"""Training curves over several runs: mean and spread of a ``history.csv`` column per epoch.

:func:`group_curves` averages one column over the runs of a group (e.g. the seeds of
``d4 / sidda``), epoch by epoch; :func:`distance_curves` does it for every domain-distance
column, which :func:`sidda.plots.distance_by_group` draws as the paper's Figure 5. The spread is
the sample standard deviation (:func:`mean_std`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["CurveStats", "distance_curves", "group_curves", "mean_std"]


class CurveStats(NamedTuple):
    """Mean and spread of one history column over the runs of a group."""

    epochs: np.ndarray  #: (E,) epochs where at least one run has a value
    mean: np.ndarray  #: (E,) mean over runs (NaN ignored)
    std: np.ndarray  #: (E,) sample std over runs (ddof 1; 0 with one run)
    n: int  #: number of runs with at least one value


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (ddof 1; 0.0 for one value) and count of the finite values.

    None and NaN are left out; ``(None, None, 0)`` when nothing is left.

    >>> mean_std([1.0, 3.0, None, float("nan")])
    (2.0, 1.4142135623730951, 2)
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def group_curves(histories: Sequence[Sequence[dict]], column: str) -> CurveStats | None:
    """Mean and sample std of ``column`` per epoch over several runs' ``history.csv`` rows.

    Runs may differ in length (early stopping): each epoch averages the runs that reached it
    and logged a finite value. Returns None when no run has the column.
    """
    per_epoch: dict[int, list[float]] = {}
    n = 0
    for rows in histories:
        got = False
        for r in rows:
            v, e = r.get(column), r.get("epoch")
            if isinstance(v, int | float) and math.isfinite(v) and e is not None:
                per_epoch.setdefault(int(e), []).append(float(v))
                got = True
        n += got
    if not per_epoch:
        return None
    epochs = np.array(sorted(per_epoch))
    stats = [mean_std(per_epoch[e]) for e in epochs]
    return CurveStats(epochs, np.array([s[0] for s in stats]), np.array([s[1] for s in stats]),
                      n)


def distance_curves(
    histories: dict[str, Sequence[Sequence[dict]]],
    columns: Sequence[str] = ("val_js_paper", "val_sinkhorn_fixed"),
    *,
    fallback: str = "val_da",
) -> dict[str, dict[str, CurveStats]]:
    """:func:`group_curves` for every distance column that some group logged.

    Args:
        histories: group label -> the ``history.csv`` rows of its runs.
        columns: distance columns to look for.
        fallback: column used when none of ``columns`` is present in any run.

    Returns:
        column -> group -> :class:`CurveStats` (groups without values left out).
    """
    out: dict[str, dict[str, CurveStats]] = {}
    for column in columns:
        got = {g: c for g, h in histories.items() if (c := group_curves(h, column))}
        if got:
            out[column] = got
    if not out and fallback:
        got = {g: c for g, h in histories.items() if (c := group_curves(h, fallback))}
        if got:
            out[fallback] = got
    return out
