"""The comparison's part of ``report.html``: the tables and a bar chart per data set."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

from sidda.compare.summary import by_data
from sidda.compare.tables import HEAD, best_notes, caption, row_cells
from sidda.plots import _figure
from sidda.report import figure_to_data_uri

__all__ = ["compare_html"]


def compare_html(rows: Sequence[dict], plan: Mapping) -> str:
    """The comparison section of the report: per data set its table, notes and bar chart."""
    text = ["<h2 id='compare'>Comparison: methods x data sets</h2>",
            f"<p class='note'>{html.escape(caption(plan))}</p>"]
    for data, rs in by_data(rows).items():
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEAD)
        body = "".join("<tr>" + "".join(
            f"<td{' class=l' if i in (0, 2) else ''}>{html.escape(c)}</td>"
            for i, c in enumerate(row_cells(r))) + "</tr>" for r in rs)
        notes = " ".join(best_notes(rs))
        text += [f"<h3>{html.escape(data)} <small>({html.escape(str(plan['data'][data]))})"
                 "</small></h3>",
                 f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
                 f"<p>{html.escape(notes)}</p>"]
        fig = _accuracy_bars(rs, title=data)
        text.append(f"<img src='{figure_to_data_uri(fig, dpi=100)}' "
                    f"alt='target accuracy per method on {html.escape(data)}'>")
    return "\n".join(text)


def _accuracy_bars(rows: Sequence[dict], *, title: str):  # noqa: ANN202 - a Figure
    """Bars: target accuracy mean +- std per method; dots: the seeds; line: source-only on source.

    Drawn on :mod:`sidda.plots`' bare Figure (no pyplot, the matplotlib install hint).
    """
    fig = _figure(max(3.2, 0.75 * len(rows) + 1.2), 3.0)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    means = [np.nan if r["target_accuracy_mean"] is None else r["target_accuracy_mean"]
             for r in rows]
    stds = [r["target_accuracy_std"] or 0.0 for r in rows]
    ax.bar(x, means, yerr=stds, capsize=3, color="#4c72b0", alpha=0.75, width=0.65)
    for i, r in enumerate(rows):
        vals = [v for v in r["target_accuracy_per_seed"] if v is not None]
        jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
        ax.plot(i + jitter, vals, "o", ms=3.5, color="k", zorder=3)
    so = next((r for r in rows if r["method"] == "source_only"), None)
    if so is not None and so["source_accuracy_mean"] is not None:
        ax.axhline(so["source_accuracy_mean"], color="0.4", ls=":", lw=1,
                   label="source_only on source")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(x, [r["method"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.02), ylabel="target accuracy", title=title)
    return fig
