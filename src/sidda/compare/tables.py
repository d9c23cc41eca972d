"""A comparison as text: one table per data set, in markdown and in plain fixed-width text.

Columns: method, target accuracy (mean ± std), the per-seed target accuracies, source accuracy,
target ECE and Brier, source ECE, gap closed; below each table the best method on target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidda.compare.summary import by_data

__all__ = ["HEAD", "best_notes", "caption", "code_span", "format_markdown", "format_text",
           "row_cells"]

#: Column titles of a comparison table.
HEAD = ("method", "target acc (mean ± std)", "per seed", "source acc", "target ECE",
        "target Brier", "source ECE", "gap closed")


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
    m, s = row[f"{domain}_{key}_mean"], row[f"{domain}_{key}_std"]
    if m is None:
        return "–"
    return f"{m:.3f}" if row["n_seeds"] < 2 else f"{m:.3f} ± {s:.3f}"


def row_cells(row: dict) -> list[str]:
    """The :data:`HEAD` cells of one :func:`~sidda.compare.summarize_compare` row, as text."""
    per_seed = ", ".join("–" if v is None else f"{v:.3f}"
                         for v in row["target_accuracy_per_seed"])
    gap = row["gap_closed"]
    return [row["method"], _ms(row, "target", "accuracy"), per_seed,
            _ms(row, "source", "accuracy"), _ms(row, "target", "ece"),
            _ms(row, "target", "brier"), _ms(row, "source", "ece"),
            "–" if gap is None else f"{100 * gap:.0f} %"]


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
    return (f"Model {plan['model']}, checkpoint {plan['checkpoint']}; mean ± sample standard "
            f"deviation (ddof 1) over seeds {seeds}. Gap closed: (acc_t(method) - "
            "acc_t(source_only)) / (acc_s(source_only) - acc_t(source_only)). ECE: "
            f"{'' if bins is None else f'{bins} '}equal-width bins; Brier: multiclass, summed "
            "over classes (0 to 2).")


def format_markdown(rows: Sequence[dict], plan: Mapping) -> str:
    """The :func:`summarize_compare` rows as markdown: one table per data set."""
    parts = [caption(plan), ""]
    for data, rs in by_data(rows).items():
        parts += [f"### {data} ({code_span(str(plan['data'][data]))})", "",
                  "| " + " | ".join(HEAD) + " |",
                  "|" + "|".join([":---", "---:", ":---"] + ["---:"] * (len(HEAD) - 3)) + "|"]
        parts += ["| " + " | ".join(row_cells(r)) + " |" for r in rs]
        parts += [""] + best_notes(rs) + [""]
    return "\n".join(parts).rstrip() + "\n"


def format_text(rows: Sequence[dict], plan: Mapping) -> str:
    """The :func:`summarize_compare` rows as fixed-width plain text, as the CLI prints them."""
    parts = []
    for data, rs in by_data(rows).items():
        table = [list(HEAD)] + [row_cells(r) for r in rs]
        widths = [max(len(row[i]) for row in table) for i in range(len(HEAD))]
        lines = ["  ".join(c.ljust(w) if i in (0, 2) else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                 for row in table]
        lines.insert(1, "-" * len(lines[0]))
        parts.append(f"{data} ({plan['data'][data]})\n" + "\n".join(lines + best_notes(rs)))
    return "\n\n".join(parts) + "\n\n" + caption(plan) + "\n"
