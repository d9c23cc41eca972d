"""Figures of data, of an evaluated run and of a sweep; the one module that imports matplotlib.

matplotlib is imported lazily: :func:`require_matplotlib` imports it or raises
:class:`MatplotlibMissing` with the install hint (``pip install 'sidda[plot]'``), and every
figure starts from :func:`figure`, which calls it. The other drawing modules
(:mod:`sidda.report.curves`, :mod:`sidda.compare.page`) build on :func:`figure` and
:func:`maybe_log`. Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot``, so no global figure state and no GUI backend is involved (a bare Figure renders
PNGs with Agg), and the caller saves it (``fig.savefig(path)``; :func:`figure_path` checks a
file name first). The numbers drawn come from :mod:`sidda.metrics` and :mod:`sidda.evaluate`;
nothing is computed here that is not drawn.

* :func:`sample_grid` - training images per class, source beside target (``sidda data show``),
  coloured by :func:`sidda.datasets.to_rgb`;

* :func:`reliability_diagram` - per domain, before and after temperature scaling;
* :func:`confusion_matrices` - per domain, row-normalised;
* :func:`isomap_figure` - the paper's Figure 4: source and target test latents, one panel per
  run, coloured by predicted class;
* :func:`distance_by_group` - the paper's Figure 5: a distance against epoch per model,
  mean and spread over seeds.

The report's training curves, every run on shared axes, are drawn by
:mod:`sidda.report.curves`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sidda import metrics
from sidda._text import escape_mathtext
from sidda.datasets.imageset import DomainData
from sidda.datasets.preview import to_rgb
from sidda.errors import InputError
from sidda.evaluate.curves import CurveStats
from sidda.evaluate.embedding import IsomapEmbedding

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DISTANCE_COLUMNS",
    "MAX_PER_CLASS",
    "MatplotlibMissing",
    "confusion_matrices",
    "distance_by_group",
    "figure",
    "figure_path",
    "isomap_figure",
    "maybe_log",
    "reliability_diagram",
    "require_matplotlib",
    "sample_grid",
]

#: history.csv columns that measure how far apart the domains are, with their plot labels.
DISTANCE_COLUMNS: dict[str, str] = {
    "val_js_paper": "JS distance, paper-compatible (paired rows of raw latents)",
    "val_sinkhorn_fixed": "Sinkhorn divergence at a fixed blur (val latents)",
}
_FALLBACK_DISTANCE = ("val_da", "validation Sinkhorn loss (dynamic blur)")


#: Most images per class and domain that :func:`sample_grid` draws.
MAX_PER_CLASS = 64


class MatplotlibMissing(InputError, ImportError):
    """matplotlib is not installed; the message says how to install it. An ImportError, and an
    input error (the command line reports it in one line, exit status 2)."""


def require_matplotlib() -> None:
    """Import matplotlib, or raise :class:`MatplotlibMissing` with the install hint."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as e:
        raise MatplotlibMissing(
            "sidda's figures need matplotlib; install it with: pip install 'sidda[plot]'"
        ) from e


def figure(width: float, height: float, *, layout: str | None = "constrained",
           dpi: float | None = None) -> Figure:
    """An empty bare Figure of ``width`` x ``height`` inches (:func:`require_matplotlib`)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout, dpi=dpi)


def figure_path(out: str | Path) -> Path:
    """The file a figure given ``--out out`` is written to: ``out``, or ``out.png`` without a
    suffix; its format must be one matplotlib writes.

    Raises:
        InputError: an unsupported suffix (the message lists the supported ones), or a folder;
            :class:`MatplotlibMissing`.
    """
    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    formats = sorted(figure(1, 1).canvas.get_supported_filetypes())
    if out.suffix[1:].lower() not in formats:
        raise InputError(f"{out}: cannot draw a {out.suffix} file; give --out a name ending in "
                         f"one of {', '.join('.' + f for f in formats)}, e.g. grid.png")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give --out a file name, e.g. {out / 'grid.png'}")
    return out


def _grid(fig: Figure, n: int, ncols: int) -> list:
    nrows = max(1, math.ceil(n / ncols))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


# --------------------------------------------------------------------------- data


def sample_grid(
    data: DomainData,
    *,
    per_class: int = 6,
    class_names: list[str] | None = None,
    random_state: int = 0,
    scale: str = "domain",
    title: str = "",
    rgb: Sequence[int] | None = None,
    stretch: str = "linear",
    q: float = 8.0,
    minimum: float | None = None,
    stretch_range: float | None = None,
) -> Figure:
    """A grid of training images: one row per class, source samples left, target right.

    A target without labels fills its side with random samples instead. Images are drawn with
    :func:`~sidda.datasets.to_rgb` (``rgb``, ``stretch``, ``q``, ``minimum``,
    ``stretch_range``), its limits taken per domain from the shown images (``scale="domain"``,
    which keeps intensity differences between images visible) or per image
    (``scale="image"``). A grid holds at
    most :data:`MAX_PER_CLASS` columns per domain, and no more than the largest class has.
    Labels are drawn literally (``$`` is escaped).

    Returns:
        A matplotlib ``Figure`` (no pyplot state), to ``savefig``.
    """
    if scale not in ("domain", "image"):
        raise InputError(f"scale must be 'domain' or 'image', got {scale!r}")
    if isinstance(per_class, bool) or not 1 <= per_class <= MAX_PER_CLASS:
        raise InputError(f"--per-class must lie in 1..{MAX_PER_CLASS}, got {per_class}")
    rng = np.random.default_rng(random_state)
    k = data.num_classes
    names = [escape_mathtext(n) for n in (class_names or range(k))]

    def pick(s) -> list[list[int]]:  # noqa: ANN001 - ImageSet
        if s.y is None:
            idx = rng.permutation(len(s))[: k * per_class].tolist()
            return [idx[r * per_class:(r + 1) * per_class] for r in range(k)]
        y = s.y.numpy()
        return [rng.permutation(np.flatnonzero(y == c))[:per_class].tolist() for c in range(k)]

    blocks = []
    for label, s in (("source", data.train_s), ("target", data.train_t)):
        rows = pick(s)
        flat = [i for r in rows for i in r]
        imgs = to_rgb(s.x[torch.tensor(flat, dtype=torch.int64)], rgb=rgb, stretch=stretch,
                      q=q, minimum=minimum, stretch_range=stretch_range,
                      per_image=scale == "image")  # (n, H, W, 3) uint8
        blocks.append((label, s, rows, dict(zip(flat, imgs, strict=True))))
    per_class = max(1, max(len(r) for _, _, rows, _ in blocks for r in rows))

    cols = 2 * per_class + 1  # source block, a narrow gap, target block
    cell = 1.0 if per_class <= 8 else 0.7
    width, height = (2 * per_class + 0.4) * cell + 1.3, k * cell + 1.0
    fig = figure(width, height, layout=None, dpi=100)
    grid = fig.add_gridspec(k, cols, left=1.3 / width, right=0.99, bottom=0.02,
                            top=1 - 0.8 / height, wspace=0.05, hspace=0.05,
                            width_ratios=[1] * per_class + [0.4] + [1] * per_class)
    for b, (label, s, rows, imgs) in enumerate(blocks):
        c0 = b * (per_class + 1)
        box = grid[0, c0 : c0 + per_class].get_position(fig)
        note = ", unlabelled: random samples" if s.y is None else ""
        fig.text((box.x0 + box.x1) / 2, box.y1 + 0.1 / height,
                 escape_mathtext(f"{label}{note}\n{Path(s.name).name}: {len(s)} images"),
                 ha="center", va="bottom", fontsize=9)
        for r in range(k):
            for j in range(per_class):
                ax = fig.add_subplot(grid[r, c0 + j])
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if j < len(rows[r]):
                    ax.imshow(imgs[rows[r][j]], interpolation="nearest")
                if b == 0 and j == 0:
                    ax.set_ylabel(names[r], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(escape_mathtext(title), fontsize=10, x=0.01, y=0.995, ha="left", va="top")
    return fig


# --------------------------------------------------------------------------- calibration


def reliability_diagram(
    domains: Mapping[str, tuple[Any, Any]],
    *,
    n_bins: int = 15,
    temperature: float | None = None,
) -> Figure:
    """Reliability diagrams, one panel per domain.

    Bars: accuracy per equal-width confidence bin of the network's softmax (from
    :func:`sidda.metrics.reliability_bins`), with the gap to the diagonal shaded. Markers:
    the same after temperature scaling, when ``temperature`` is given. A strip under each
    panel shows how many samples fall in each bin.

    Args:
        domains: domain name -> ``(logits (N, K), labels (N,))``.
        n_bins: Number of bins.
        temperature: T fitted on source validation data, or None.
    """
    fig = figure(4.2 * max(1, len(domains)), 4.6)
    cols = fig.subfigures(1, max(1, len(domains)), squeeze=False).ravel()
    for sub, (name, (logits, labels)) in zip(cols, domains.items(), strict=False):
        ax, hist = sub.subplots(2, 1, sharex=True, height_ratios=(4, 1))
        logits = np.asarray(logits, dtype=np.float64)
        probs = metrics.apply_temperature(logits, 1.0)
        rb = metrics.reliability_bins(probs, labels, n_bins=n_bins)
        ece = float(metrics.expected_calibration_error(probs, labels, n_bins=n_bins))
        edges = rb.edges.numpy()
        width = np.diff(edges)
        acc = np.nan_to_num(rb.accuracy.numpy())
        conf = rb.confidence.numpy()
        ax.bar(edges[:-1], acc, width=width, align="edge", color="#4c72b0", edgecolor="white",
               label=f"network (ECE {ece:.3f})")
        filled = rb.counts.numpy() > 0
        ax.bar(edges[:-1][filled], (conf - acc)[filled], bottom=acc[filled],
               width=width[filled], align="edge", color="#dd8452", alpha=0.45, label="gap")
        ax.plot([0, 1], [0, 1], color="0.3", ls="--", lw=1)
        title = f"{name}"
        if temperature is not None:
            probs_t = metrics.apply_temperature(logits, temperature)
            rb_t = metrics.reliability_bins(probs_t, labels, n_bins=n_bins)
            ece_t = float(metrics.expected_calibration_error(probs_t, labels, n_bins=n_bins))
            ax.plot(rb_t.confidence.numpy(), rb_t.accuracy.numpy(), "o-", color="#c44e52",
                    ms=4, lw=1, label=f"T = {temperature:.2f} (ECE {ece_t:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
        ax.legend(loc="upper left", fontsize=8)
        hist.bar(edges[:-1], rb.counts.numpy(), width=width, align="edge", color="0.6")
        hist.set(xlabel="confidence (max softmax)", ylabel="n")
    return fig


def confusion_matrices(
    matrices: Mapping[str, Any], *, class_names: Sequence[str] | None = None
) -> Figure:
    """Row-normalised confusion matrices (rows: true class), one panel per domain.

    Args:
        matrices: domain name -> (K, K) count matrix, rows true and columns predicted.
        class_names: K tick labels.
    """
    k = len(next(iter(matrices.values()))) if matrices else 0
    size = 2.2 + 0.45 * k
    fig = figure(size * max(1, len(matrices)), size)
    for ax, (name, cm) in zip(_grid(fig, len(matrices), max(1, len(matrices))),
                              matrices.items(), strict=True):
        cm = np.asarray(cm, dtype=float)
        rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{rows[i, j]:.2f}\n({int(cm[i, j])})", ha="center",
                        va="center", fontsize=7, color="white" if rows[i, j] > 0.6 else "black")
        names = [escape_mathtext(n) for n in (class_names or range(k))]
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set(xlabel="predicted", ylabel="true", title=escape_mathtext(name))
    return fig


# --------------------------------------------------------------------------- latent space


def isomap_figure(
    panels: Mapping[str, IsomapEmbedding], *, class_names: Sequence[str] | None = None
) -> Figure:
    """The paper's Figure 4: 2-d Isomap of source and target test latents, one panel per run.

    Colour: the **predicted** class (viridis). Source: filled upward triangles; target:
    hollow downward triangles. Crosses mark the centroid of each predicted class per domain.

    Args:
        panels: panel title (e.g. the run name) -> :class:`sidda.evaluate.IsomapEmbedding`.
        class_names: names of the classes for the legend.
    """
    fig = figure(4.2 * max(1, min(len(panels), 4)), 4.2 * max(1, math.ceil(len(panels) / 4)))
    from matplotlib.lines import Line2D  # after figure(): matplotlib is there
    k = max((int(max(e.preds_s.max(initial=0), e.preds_t.max(initial=0))) + 1
             for e in panels.values()), default=1)
    if class_names:
        k = max(k, len(class_names))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    colours = [cmap(i / max(1, k - 1)) for i in range(k)]
    for ax, (name, emb) in zip(_grid(fig, len(panels), min(len(panels), 4) or 1),
                               panels.items(), strict=True):
        ax.scatter(emb.points_s[:, 0], emb.points_s[:, 1], marker="^", s=14,
                   c=[colours[p] for p in emb.preds_s], alpha=0.8, linewidths=0)
        ax.scatter(emb.points_t[:, 0], emb.points_t[:, 1], marker="v", s=16,
                   facecolors="none", edgecolors=[colours[p] for p in emb.preds_t],
                   linewidths=0.8, alpha=0.8)
        for pts, preds, edge in ((emb.points_s, emb.preds_s, "black"),
                                 (emb.points_t, emb.preds_t, "red")):
            for c in np.unique(preds):
                cx, cy = pts[preds == c].mean(0)
                ax.plot(cx, cy, "X", ms=9, color=colours[c], mec=edge, mew=1.2)
        ax.set(title=escape_mathtext(name), xticks=[], yticks=[])
        ax.text(0.99, 0.01, f"{len(emb.points_s)} + {len(emb.points_t)} points, "
                f"k = {emb.n_neighbors}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="0.4")
    names = [escape_mathtext(n) for n in (class_names or range(k))]
    handles = [Line2D([], [], marker="^", ls="", color="0.3", label="source (filled)"),
               Line2D([], [], marker="v", ls="", mfc="none", color="0.3",
                      label="target (hollow)")]
    handles += [Line2D([], [], marker="s", ls="", color=colours[i], label=f"pred. {names[i]}")
                for i in range(k)]
    handles += [Line2D([], [], marker="X", ls="", color="0.6", mec="black",
                       label="class centroid (red edge: target)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
               fontsize=8)
    return fig


# --------------------------------------------------------------------------- sweeps


def maybe_log(ax: Any, values: np.ndarray) -> None:
    """Log y-axis when every value is positive and they span more than a factor of 10."""
    values = values[np.isfinite(values)]
    if len(values) and values.min() > 0 and values.max() / values.min() > 10:
        ax.set_yscale("log")


def distance_by_group(
    curves: Mapping[str, Mapping[str, CurveStats]],
    *,
    labels: Mapping[str, str] | None = None,
    warmup: int | None = None,
) -> Figure:
    """The paper's Figure 5: a domain distance against epoch, per model, mean and spread.

    One panel per distance column; one line per group (e.g. ``d4 / sidda``) with the mean
    over seeds and a band of +-1 standard deviation (dashed: source-only groups); log y-axis
    when the band stays positive and spans more than a factor of 10.

    Args:
        curves: column -> group -> :class:`sidda.evaluate.CurveStats`.
        labels: column -> axis title (default :data:`DISTANCE_COLUMNS`).
        warmup: Number of warm-up epochs (epochs 1..warmup, as in ``history.csv``); a
            vertical line marks the start of the alignment.
    """
    labels = {**DISTANCE_COLUMNS, _FALLBACK_DISTANCE[0]: _FALLBACK_DISTANCE[1],
              **(labels or {})}
    fig = figure(5.5 * max(1, len(curves)), 4.2)
    from matplotlib.ticker import MaxNLocator  # after figure(): matplotlib is there
    for ax, (column, groups) in zip(_grid(fig, len(curves), max(1, len(curves))),
                                    curves.items(), strict=True):
        for group, st in groups.items():
            ls = "--" if "source_only" in group else "-"
            (line,) = ax.plot(st.epochs, st.mean, ls=ls, lw=1.5, label=f"{group} (n={st.n})",
                              marker="." if len(st.epochs) < 30 else None)
            ax.fill_between(st.epochs, st.mean - st.std, st.mean + st.std,
                            color=line.get_color(), alpha=0.2, lw=0)
        if groups:
            maybe_log(ax, np.concatenate([np.r_[st.mean - st.std, st.mean + st.std]
                                           for st in groups.values()]))
        if warmup:
            ax.axvline(warmup + 0.5, color="0.5", ls=":", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=labels.get(column, column), xlabel="epoch", ylabel=column)
        ax.legend(fontsize=8)
    return fig
