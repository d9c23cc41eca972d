r"""Training curves of every run on shared axes: one figure per quantity, x always in epochs.

:func:`training_curves` draws :data:`CURVE_FIGURES`: the losses (objective, CE, DA; training
solid, validation dashed), the source validation accuracy, the alignment distances
(paper-compatible JS, Sinkhorn divergence at a fixed blur, the dynamic blur with its 0.01 floor,
the largest cross-domain latent distance, JS per step), SIDDA's learned weights
:math:`\eta_1^{-2}` (on the CE) and :math:`\eta_2^{-2}` (on the DA), and the learning rate.
Each axes holds one line per *curve*: a run, or a group of runs that differ only in their seed
(:func:`seed_groups`), drawn as the mean with a band of :math:`\pm 1` sample standard deviation
(:func:`sidda.evaluate.mean_std`) over the runs that have a value at that x.

**Epochs.** A ``history.csv`` row is written at the end of epoch e (1-based), at x = e. Of the
n rows of epoch e in ``history_steps.csv``, the j-th (0-based, in step order) is at
:math:`x = e - 1 + (j + 1)/n`: the step count over the steps per epoch, so the last step of an
epoch falls on that epoch's row (:func:`step_epochs`). A column logged per step (the weights, the
blur, the latent distance) is drawn per step where the run logged it so, else per epoch.
Warm-up epochs 1..W (``phase`` "warmup") span x in [0, W]: shaded when every run with a warm-up
has the same W, else marked by a dotted line at each curve's W in its colour.

The legend is a row under the axes, outside them, so it hides no data. Every curve's line carries
its label as ``gid``, so a test can count the curves of an axes before the figure is rendered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sidda._text import escape_mathtext
from sidda.evaluate.curves import mean_std
from sidda.plots import figure, maybe_log, require_matplotlib
from sidda.runs import History

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CURVE_FIGURES", "Series", "seed_groups", "step_epochs", "training_curves",
           "warmup_epochs"]


class Series(NamedTuple):
    """One column drawn in a panel."""

    column: str  #: a history column, or ``w_ce`` / ``w_da`` (eta_1^-2, eta_2^-2)
    style: str = "-"  #: ``"-"`` training, ``"--"`` validation
    per_step: bool = False  #: from ``history_steps.csv`` where the run logged it there


#: figure title -> its panels: (axes title, series, log y-axis allowed).
CURVE_FIGURES: dict[str, list[tuple[str, tuple[Series, ...], bool]]] = {
    "losses": [
        ("objective (CE + DA)", (Series("train_total"), Series("val_total", "--")), True),
        ("CE", (Series("train_ce"), Series("val_ce", "--")), True),
        ("DA (alignment loss)", (Series("train_da"), Series("val_da", "--")), True),
    ],
    "source validation accuracy": [
        ("source validation accuracy", (Series("val_acc_s", "--"),), False),
    ],
    "alignment distances": [
        ("JS distance, paper-compatible (val)", (Series("val_js_paper", "--"),), True),
        ("Sinkhorn divergence, fixed blur (val)", (Series("val_sinkhorn_fixed", "--"),), True),
        ("blur (sigma)", (Series("blur", per_step=True),), True),
        ("max latent distance |z_s - z_t|", (Series("max_distance", per_step=True),), True),
        ("JS distance per step (training batches)", (Series("js", per_step=True),), True),
    ],
    "learned weights": [
        ("eta_1^-2 (weight on CE)", (Series("w_ce", per_step=True),), True),
        ("eta_2^-2 (weight on DA)", (Series("w_da", per_step=True),), True),
    ],
    "learning rate": [("learning rate", (Series("lr"),), True)],
}
_DERIVED = {"w_ce": "eta_1", "w_da": "eta_2"}  # drawn as 1 / eta^2
_BLUR_FLOOR = 0.01


def _value(row: dict, column: str) -> float | None:
    v = row.get(_DERIVED.get(column, column))
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        return None
    if column in _DERIVED:
        return 1.0 / float(v) ** 2 if v else None
    return float(v)


def step_epochs(steps: Sequence[dict]) -> np.ndarray:
    """x in epochs of each ``history_steps.csv`` row (module docstring); NaN without an epoch.

    >>> rows = [{"epoch": 1, "step": 0}, {"epoch": 1, "step": 1}, {"epoch": 2, "step": 2},
    ...         {"epoch": 2, "step": 3}]
    >>> step_epochs(rows).tolist()
    [0.5, 1.0, 1.5, 2.0]
    """
    by_epoch: dict[float, list[int]] = {}
    for i, r in enumerate(steps):
        e = r.get("epoch")
        if isinstance(e, int | float) and math.isfinite(e):
            by_epoch.setdefault(float(e), []).append(i)
    x = np.full(len(steps), np.nan)
    for e, idx in by_epoch.items():
        def order(i: int) -> tuple[float, int]:
            s = steps[i].get("step")
            return (float(s) if isinstance(s, int | float) else float(i), i)

        for j, i in enumerate(sorted(idx, key=order)):
            x[i] = e - 1 + (j + 1) / len(idx)
    return x


def warmup_epochs(history: History) -> int:
    """W: the last epoch whose ``phase`` is ``warmup`` (0 without warm-up)."""
    warm = [r.get("epoch") for r in history.epochs if r.get("phase") == "warmup"]
    return int(max((e for e in warm if isinstance(e, int | float)), default=0))


def _xy(history: History, series: Series) -> tuple[np.ndarray, np.ndarray]:
    """(x in epochs, y) of one run's series, the finite points only."""
    use_steps = series.per_step and any(_value(r, series.column) is not None
                                        for r in history.steps)
    rows = history.steps if use_steps else history.epochs
    xs = step_epochs(rows) if use_steps else np.array(
        [r.get("epoch") if isinstance(r.get("epoch"), int | float) else np.nan for r in rows],
        dtype=float)
    ys = np.array([np.nan if (v := _value(r, series.column)) is None else v for r in rows],
                  dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


class _Line(NamedTuple):
    x: np.ndarray  #: (P,) epochs
    mean: np.ndarray  #: (P,)
    std: np.ndarray | None  #: (P,) for a group of runs, else None


def _line(histories: Sequence[History], series: Series) -> _Line | None:
    """One curve's series: the run's points, or the mean and spread over a group's runs."""
    parts = [_xy(h, series) for h in histories]
    parts = [(x, y) for x, y in parts if len(x)]
    if not parts:
        return None
    if len(histories) == 1:
        return _Line(parts[0][0], parts[0][1], None)
    at: dict[float, list[float]] = {}
    for x, y in parts:
        for a, b in zip(np.round(x, 9), y, strict=True):
            at.setdefault(float(a), []).append(float(b))
    xs = np.array(sorted(at))
    stats = [mean_std(at[a]) for a in xs]
    return _Line(xs, np.array([s[0] for s in stats]), np.array([s[1] for s in stats]))


def _colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def training_curves(curves: Mapping[str, Sequence[History]]) -> dict[str, Figure]:
    """The figures of :data:`CURVE_FIGURES` that hold data, every curve on each axes.

    Args:
        curves: curve label -> the histories of its runs (one run, or the seeds of a group:
            mean +- 1 sample std).

    Returns:
        figure title -> :class:`matplotlib.figure.Figure`, in :data:`CURVE_FIGURES` order;
        a figure none of whose panels has a point is left out.
    """
    require_matplotlib()  # the install hint, before matplotlib is imported here
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    colours = dict(zip(curves, _colours(len(curves)), strict=True))
    warm = {label: {warmup_epochs(h) for h in hs} - {0} for label, hs in curves.items()}
    lengths = set().union(*warm.values())
    shade = next(iter(lengths)) if len(lengths) == 1 else 0  # a run without warm-up: none
    out: dict[str, Figure] = {}
    for title, spec in CURVE_FIGURES.items():
        panels = []
        for name, series, log in spec:
            drawn = [(label, s, ln) for s in series for label, hs in curves.items()
                     if (ln := _line(hs, s)) is not None]
            if drawn:
                panels.append((name, series, log, drawn))
        if not panels:
            continue
        ncols = min(len(panels), 3)
        nrows = math.ceil(len(panels) / ncols)
        fig = figure(4.3 * ncols, 3.0 * nrows + 0.3 * math.ceil((len(curves) + 3) / 4))
        fig.suptitle(title)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        styles: set[str] = set()
        shown: set[str] = set()  # curves with a line in this figure
        floors = False
        for ax, (name, series, log, drawn) in zip(axes, panels, strict=False):
            values = []
            for label, s, ln in drawn:
                styles.add(s.style)
                shown.add(label)
                ax.plot(ln.x, ln.mean, ls=s.style, color=colours[label], lw=1.3, gid=label,
                        marker="." if len(ln.x) < 30 else None, label=escape_mathtext(label))
                values.append(ln.mean)
                if ln.std is not None:
                    ax.fill_between(ln.x, ln.mean - ln.std, ln.mean + ln.std, lw=0, alpha=0.2,
                                    color=colours[label])
                    values += [ln.mean - ln.std, ln.mean + ln.std]
            if log:
                maybe_log(ax, np.concatenate(values))
            floor = series[0].column == "blur" and min(v.min() for v in values) < 10 * _BLUR_FLOOR
            if floor:
                ax.axhline(_BLUR_FLOOR, color="0.5", ls=":", lw=1)
                floors = True
            if shade:
                ax.axvspan(0, shade, color="0.92", zorder=0, label="warm-up")
            else:
                for label in {label for label, _, _ in drawn}:
                    for w in warm[label]:
                        ax.axvline(w, color=colours[label], ls=":", lw=1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(left=0)
            ax.set(title=name, xlabel="epoch")
        handles = [Line2D([], [], color=colours[label], lw=2, label=escape_mathtext(
            label if len(hs) == 1 else f"{label}: mean \u00b1 1 sd of {len(hs)} runs"))
            for label, hs in curves.items() if label in shown]
        if styles == {"-", "--"}:
            handles += [Line2D([], [], color="0.2", ls="-", label="training"),
                        Line2D([], [], color="0.2", ls="--", label="validation")]
        if shade:
            span = "epoch 1" if shade == 1 else f"epochs 1-{shade}"
            handles.append(Patch(color="0.85", label=f"warm-up ({span})"))
        elif any(warm[label] for label in shown):
            handles.append(Line2D([], [], color="0.4", ls=":", label="end of warm-up"))
        if floors:
            handles.append(Line2D([], [], color="0.5", ls=":", label=f"blur floor {_BLUR_FLOOR}"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
                   fontsize=8, frameon=False)
        out[title] = fig
    return out


def seed_groups(labels: Sequence[str], configs: Sequence[dict | None]) -> dict[str, list[int]]:
    """The curves of a report: curve label -> the indices of its runs.

    Runs whose configs are equal once ``name``, ``out_dir`` and ``train.seed`` are left out,
    and whose seeds all differ, are one curve labelled ``"<method> / <model>, seeds a, b"``;
    every other run (a config that does not read: None) is a curve of its own, under its label.

    >>> base = {"model": {"name": "cnn"}, "loss": {"method": "sidda"}, "train": {"seed": 0}}
    >>> seed = {**base, "train": {"seed": 1}}
    >>> seed_groups(["a", "b", "c"], [base, seed, None])
    {'sidda / cnn, seeds 0, 1': [0, 1], 'c': [2]}
    """
    keyed: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, dict):
            keyed[f"run {i}"] = [i]
            continue
        train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
        rest = {k: v for k, v in cfg.items() if k not in ("name", "out_dir", "train")}
        rest["train"] = {k: v for k, v in train.items() if k != "seed"}
        keyed.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(i)
    out: dict[str, list[int]] = {}
    for idx in keyed.values():
        cfgs = [configs[i] for i in idx]
        seeds = [(c.get("train") or {}).get("seed") for c in cfgs] if len(idx) > 1 else []
        if len(idx) == 1 or len(set(map(str, seeds))) < len(idx):
            out.update({labels[i]: [i] for i in idx})
            continue
        method = (cfgs[0].get("loss") or {}).get("method", "?")
        model = (cfgs[0].get("model") or {}).get("name", "?")
        label = f"{method} / {model}, seeds {', '.join(map(str, seeds))}"
        out[label if label not in out else f"{label} ({labels[idx[0]]})"] = idx
    return out
