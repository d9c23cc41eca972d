"""A comparison as text: one table per data set, in markdown and in plain fixed-width text.

Columns: method, target accuracy (mean ± std), the per-seed target accuracies, source accuracy,
target ECE and Brier, source ECE, gap closed, and the label-free columns: the collapse flag of
each seed, the label-free validator's score and the domain distance (Sinkhorn divergence at a
fixed blur between source validation and target test latents). Below each table: the best
method on target and how far each validator agrees with target accuracy; without target labels,
the methods and the runs ranked by the validator, collapsed ones last
(:mod:`sidda.evaluate.standings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidda.compare.summary import by_data
from sidda.evaluate.standings import (
    collapse_cell,
    markdown_table,
    standings_tables,
    text_table,
)
from sidda.metrics.ranking import DEFAULT_VALIDATOR

__all__ = ["LEFT", "best_notes", "caption", "code_span", "format_markdown",
           "format_text", "head", "row_cells"]

#: Column indices of a comparison table that are text (left-aligned).
LEFT = (0, 2, 8)


def head(validator: str = DEFAULT_VALIDATOR) -> tuple[str, ...]:
    """Column titles of a comparison table with ``validator``'s column."""
    return ("method", "target acc (mean ± std)", "per seed", "source acc", "target ECE",
            "target Brier", "source ECE", "gap closed", "collapse", validator.upper(),
            "domain dist.")


def code_span(text: str) -> str:
    """``text`` as a markdown code span that nothing in it can close: the fence is one
    backtick longer than its longest run of backticks (CommonMark), so a path holding
    backticks or ``<img ...>`` stays literal text, never HTML. Line breaks become spaces.

    >>> code_span("data/a")
    '`data/a`'
    >>> code_span("a`<img src=x>`b")
    '``a`<img src=x>`b``'
    >>> code_span("`x")
    '`` `x ``'
    """
    text = " ".join(text.splitlines())
    ticks = "".join(c if c == "`" else " " for c in text).split()  # the runs of backticks
    longest = max(map(len, ticks), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _ms(row: dict, domain: str, key: str) -> str:
    return _mean_pm(row, f"{domain}_{key}")


def _mean_pm(row: dict, prefix: str) -> str:
    m, s = row[f"{prefix}_mean"], row[f"{prefix}_std"]
    if m is None:
        return "–"
    return f"{m:.3f}" if row["n_seeds"] < 2 else f"{m:.3f} ± {s:.3f}"


def row_cells(row: dict) -> list[str]:
    """The :func:`head` cells of one :func:`~sidda.compare.summarize_compare` row, as text."""
    per_seed = ", ".join("–" if v is None else f"{v:.3f}"
                         for v in row["target_accuracy_per_seed"])
    gap = row["gap_closed"]
    return [row["method"], _ms(row, "target", "accuracy"), per_seed,
            _ms(row, "source", "accuracy"), _ms(row, "target", "ece"),
            _ms(row, "target", "brier"), _ms(row, "source", "ece"),
            "–" if gap is None else f"{100 * gap:.0f} %",
            collapse_cell(row.get("collapse_per_seed", [])), _mean_pm(row, "validator"),
            _mean_pm(row, "sinkhorn")]


def best_notes(rows: Sequence[dict]) -> list[str]:
    """The best method on target (ties, and a runner-up within one std, named) and its gap."""
    scored = sorted((r for r in rows if r["target_accuracy_mean"] is not None),
                    key=lambda r: -r["target_accuracy_mean"])
    if not scored:
        return []
    best, top = scored[0], scored[0]["target_accuracy_mean"]
    line = (f"Best on target: {best['method']} ({_ms(best, 'target', 'accuracy')}, "
            f"{best['n_seeds']} seed{'s' * (best['n_seeds'] != 1)})")
    tied = [r["method"] for r in scored[1:] if r["target_accuracy_mean"] == top]
    close = [r for r in scored[1:] if r["target_accuracy_mean"] != top]
    if tied:
        line += f", tied with {', '.join(tied)}"
    elif close and top - close[0]["target_accuracy_mean"] < max(
            best["target_accuracy_std"] or 0.0, close[0]["target_accuracy_std"] or 0.0):
        line += (f"; {close[0]['method']} ({close[0]['target_accuracy_mean']:.3f}) is within "
                 "one standard deviation")
    lines = [line + "."]
    so = next((r for r in rows if r["method"] == "source_only"), None)
    if so is not None and best["gap_closed"] is not None and best is not so:
        lines.append(f"{best['method']} closes {100 * best['gap_closed']:.0f} % of the "
                     f"source-only gap ({so['source_accuracy_mean']:.3f} on source, "
                     f"{so['target_accuracy_mean']:.3f} on target).")
    elif so is not None and so["source_accuracy_mean"] is not None and best["gap_closed"] is None:
        lines.append(f"No source-only gap to close: source_only reaches "
                     f"{so['target_accuracy_mean']:.3f} on target and "
                     f"{so['source_accuracy_mean']:.3f} on source.")
    return lines


def caption(plan: Mapping) -> str:
    """The note under every table: model, checkpoint, statistics and metric definitions."""
    seeds = ", ".join(str(s) for s in plan["seeds"])
    bins = plan.get("n_bins")
    v = plan.get("validator", DEFAULT_VALIDATOR)
    return (f"Model {plan['model']}, checkpoint {plan['checkpoint']}; mean ± sample standard "
            f"deviation (ddof 1) over seeds {seeds}. Gap closed: (acc_t(method) - "
            "acc_t(source_only)) / (acc_s(source_only) - acc_t(source_only)). ECE: "
            f"{'' if bins is None else f'{bins} '}equal-width bins; Brier: multiclass, summed "
            "over classes (0 to 2). Label-free columns (no target label read): collapse, the "
            "flag of the label-free diagnostics per seed; "
            f"{v.upper()}, the label-free validator (higher is better); domain dist., the "
            "Sinkhorn divergence (blur 1.0) between source validation and target test latents "
            "(docs/evaluation.md).")


def format_markdown(rows: Sequence[dict], plan: Mapping,
                    standings: Mapping[str, Mapping] | None = None) -> str:
    """The :func:`summarize_compare` rows as markdown: one table per data set, then its
    standings (:func:`~sidda.compare.summary.compare_standings`) when given."""
    cols = head(plan.get("validator", DEFAULT_VALIDATOR))
    parts = [caption(plan), ""]
    for data, rs in by_data(rows).items():
        parts += [f"### {data} ({code_span(str(plan['data'][data]))})", "",
                  "| " + " | ".join(cols) + " |",
                  "|" + "|".join(":---" if i in LEFT else "---:" for i in range(len(cols)))
                  + "|"]
        parts += ["| " + " | ".join(row_cells(r)) + " |" for r in rs]
        parts += [""] + best_notes(rs) + [""]
        for sentence, h, body in standings_tables((standings or {}).get(data), what="method"):
            parts += [sentence, "", markdown_table(h, body), ""]
    return "\n".join(parts).rstrip() + "\n"


def format_text(rows: Sequence[dict], plan: Mapping,
                standings: Mapping[str, Mapping] | None = None) -> str:
    """The :func:`summarize_compare` rows as fixed-width plain text, as the CLI prints them."""
    cols = head(plan.get("validator", DEFAULT_VALIDATOR))
    parts = []
    for data, rs in by_data(rows).items():
        table = [list(cols)] + [row_cells(r) for r in rs]
        widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
        lines = ["  ".join(c.ljust(w) if i in LEFT else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                 for row in table]
        lines.insert(1, "-" * len(lines[0]))
        lines += best_notes(rs)
        for sentence, h, body in standings_tables((standings or {}).get(data), what="method"):
            lines += ["", sentence, text_table(h, body)]
        parts.append(f"{data} ({plan['data'][data]})\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n\n" + caption(plan) + "\n"
