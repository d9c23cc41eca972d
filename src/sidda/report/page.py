"""The report page: :func:`build_report` puts the sections together, :func:`write_report` writes
it atomically."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

from sidda._version import __version__
from sidda.errors import InputError, short_repr
from sidda.report.curves import seed_groups, training_curves
from sidda.report.gallery import per_side_for
from sidda.report.loading import ReportRun, run_labels
from sidda.report.markup import CSS, esc, img
from sidda.report.overview import overview_html
from sidda.report.sections import (
    calibration_html,
    isomap_html,
    run_html,
    selection_html,
    summary_html,
)
from sidda.runs import RunDir, atomic_write

__all__ = ["ISOMAP_POINTS", "build_report", "check_isomap_points", "write_report"]

#: Points per domain that the Isomap takes (a neighbour graph needs some; it costs O(n^2)).
ISOMAP_POINTS = (10, 5000)


def check_isomap_points(n: object) -> int:
    """``n`` if it is an integer in :data:`ISOMAP_POINTS`, else :class:`InputError`."""
    lo, hi = ISOMAP_POINTS
    if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= hi:
        raise InputError(
            f"--isomap-points must be an integer in {lo}..{hi}, got {short_repr(n)}; the default "
            "600 is the paper's"
        )
    return n


def _curves_html(runs: list[ReportRun]) -> str:
    """Every run's training curves on shared axes, one figure per quantity."""
    groups = seed_groups([r.label for r in runs], [r.config_dict for r in runs])
    figures = training_curves({label: [runs[i].history for i in idx]
                               for label, idx in groups.items()})
    if not figures:
        return ""
    return (
        "<h2 id='curves'>Training curves</h2>"
        "<p class='note'>Every run on the same axes, x in epochs (a per-step value at its "
        "fraction of the epoch); runs that differ only in their seed are drawn as their mean "
        "with a band of &plusmn;1 standard deviation. Solid: training; dashed: validation. "
        "Shaded: the warm-up epochs, before the alignment starts.</p>"
        + "".join(img(fig, f"training curves: {title}", data_curves=len(groups))
                  for title, fig in figures.items())
    )


def build_report(
    run_dirs: Sequence[RunDir | str | Path],
    *,
    title: str | None = None,
    isomap_points: int = 600,
    extra_html: str = "",
    base: str | Path | None = None,
    rgb: Sequence[int] | None = None,
    stretch: str = "linear",
) -> str:
    """The HTML text of the report for evaluated run directories.

    Args:
        run_dirs: Run directories with a complete evaluation (``sidda evaluate``).
        title: Page title.
        isomap_points: Points per domain in the Isomap.
        extra_html: Trusted HTML inserted after the summary (used by ``sidda sweep``).
        base: The folder the page will be in: every path on it is relative to this folder
            (default: the current directory).
        rgb: Bands drawn as R, G, B in the galleries (default as ``sidda data show``:
            :func:`~sidda.datasets.preview.colour_for`).
        stretch: Stretch of the galleries (:func:`sidda.datasets.to_rgb`, which checks both).

    Raises:
        FileNotFoundError: a run is not evaluated; DamagedFileError: a run file does not read;
        InputError: a bad ``rgb``, ``stretch`` or ``isomap_points``.
    """
    if not run_dirs:
        raise ValueError("build_report needs at least one run directory")
    check_isomap_points(isomap_points)
    base = Path.cwd() if base is None else Path(base)
    dirs = [RunDir.of(p) for p in run_dirs]
    evaluations = [run.require_evaluation() for run in dirs]  # every run before reading any
    runs = [ReportRun.read(run, label, metrics=m)
            for run, label, m in zip(dirs, run_labels(dirs), evaluations, strict=True)]
    per_side = per_side_for([r.info.num_classes for r in runs])
    title = title or ("sidda report: " + ", ".join(r.label for r in runs))
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    nav = " &middot; ".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("overview", "What happened on the target"), ("summary", "Summary"),
        ("calibration", "Calibration"), ("selection", "Checkpoint selection"),
        ("isomap", "Latent space"), ("curves", "Training curves")))
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='note'>Generated {esc(stamp)} by sidda {esc(__version__)}. {nav}</p>",
        overview_html(runs), summary_html(runs), extra_html, calibration_html(runs),
        selection_html(runs), isomap_html(runs, n_points=isomap_points), _curves_html(runs),
        *(run_html(r, base=base, rgb=rgb, stretch=stretch, per_side=per_side) for r in runs),
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(
    run_dirs: Sequence[RunDir | str | Path],
    out: str | Path,
    *,
    title: str | None = None,
    isomap_points: int = 600,
    extra_html: str = "",
    rgb: Sequence[int] | None = None,
    stretch: str = "linear",
) -> Path:
    """Write the report of evaluated runs (:func:`build_report`) to ``out``, atomically; its
    paths are relative to ``out``'s folder.

    Args:
        run_dirs: Run directories with a complete evaluation
            (:func:`sidda.experiments.evaluate_runs` makes them so).
        out: The HTML file to write.
        title: Page title.
        isomap_points: Points per domain in the Isomap.
        extra_html: Trusted HTML inserted after the summary.
        rgb: Bands drawn as R, G, B in the galleries (default as ``sidda data show``).
        stretch: Stretch of the galleries.
    """
    out = Path(out)
    text = build_report(run_dirs, title=title, isomap_points=isomap_points,
                        extra_html=extra_html, base=out.absolute().parent, rgb=rgb,
                        stretch=stretch)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, text)
