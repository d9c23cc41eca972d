"""The comparison's part of ``report.html``: per data set the tables (results, label-free
standings) and a bar chart."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

from sidda.compare.summary import by_data
from sidda.compare.tables import LEFT, best_notes, caption, head, row_cells
from sidda.evaluate.standings import standings_tables
from sidda.metrics.ranking import DEFAULT_VALIDATOR
from sidda.plots import figure
from sidda.report import figure_to_data_uri

__all__ = ["compare_html"]


def compare_html(rows: Sequence[dict], plan: Mapping,
                 standings: Mapping[str, Mapping] | None = None) -> str:
    """The comparison section of the report: per data set its table, notes, standings (the
    label-free ranking, or the validators' agreement with target accuracy) and bar chart."""
    text = ["<h2 id='compare'>Comparison: methods x data sets</h2>",
            f"<p class='note'>{html.escape(caption(plan))}</p>"]
    cols = head(plan.get("validator", DEFAULT_VALIDATOR))
    for data, rs in by_data(rows).items():
        notes = " ".join(best_notes(rs))
        text += [f"<h3>{html.escape(data)} <small>({html.escape(str(plan['data'][data]))})"
                 "</small></h3>",
                 _table(cols, [row_cells(r) for r in rs], left=LEFT),
                 f"<p>{html.escape(notes)}</p>"]
        for sentence, h, body in standings_tables((standings or {}).get(data), what="method"):
            text += [f"<p>{html.escape(sentence)}</p>", _table(h, body, left=(0, 1, len(h) - 1))]
        fig = _accuracy_bars(rs, title=data)
        text.append(f"<img src='{figure_to_data_uri(fig, dpi=100)}' "
                    f"alt='target accuracy per method on {html.escape(data)}'>")
    return "\n".join(text)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, left: Sequence[int]) -> str:
    """An HTML table, every cell escaped; columns ``left`` left-aligned."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i in left else ''}>{html.escape(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _accuracy_bars(rows: Sequence[dict], *, title: str):  # noqa: ANN202 - a Figure
    """Bars: target accuracy mean +- std per method; dots: the seeds; line: source-only on source.

    Drawn on :func:`sidda.plots.figure` (no pyplot, the matplotlib install hint).
    """
    fig = figure(max(3.2, 0.75 * len(rows) + 1.2), 3.0)
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
