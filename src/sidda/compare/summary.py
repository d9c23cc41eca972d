"""Statistics of a comparison: mean and sample std over seeds, the share of the gap closed, and
the label-free standings (a ranking without target labels, the validators' agreement with them).

Rows are grouped per (data set, method) in first-seen order; the std is the sample standard
deviation (ddof 1; 0.0 for one seed). The gap closed by a method on a data set is
``(acc_t(method) - acc_t(source_only)) / (acc_s(source_only) - acc_t(source_only))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidda.evaluate.curves import mean_std as _mean_std
from sidda.evaluate.standings import label_free_columns, run_facts, standings
from sidda.evaluate.validators import VALIDATORS
from sidda.metrics.ranking import DEFAULT_VALIDATOR
from sidda.sweep import _metric

__all__ = ["COMPARE_METRICS", "RUN_METRICS", "best_row", "by_data", "compare_standings",
           "gap_closed", "run_label", "run_row", "summarize_compare"]

#: (domain, metric) pairs summarised per (data set, method), in table order.
COMPARE_METRICS = (
    ("target", "accuracy"), ("source", "accuracy"), ("target", "ece"), ("target", "brier"),
    ("source", "ece"),
)
#: (domain, metric) columns of ``compare.csv``, one row per run.
RUN_METRICS = tuple((d, k) for d in ("source", "target")
                    for k in ("accuracy", "ece", "brier", "nll")) + (("target", "ece_ts"),)


def gap_closed(acc_t: float | None, so_acc_s: float | None, so_acc_t: float | None
               ) -> float | None:
    """Share of the source-only domain gap that a method closes.

    ``(acc_t - so_acc_t) / (so_acc_s - so_acc_t)``: 0 for the source-only model itself, 1 when
    the target accuracy reaches the source-only source accuracy. None without a gap.

    >>> gap_closed(0.75, 1.0, 0.5)
    0.5
    """
    if acc_t is None or so_acc_s is None or so_acc_t is None or not so_acc_s - so_acc_t > 0:
        return None
    return (acc_t - so_acc_t) / (so_acc_s - so_acc_t)


def summarize_compare(runs: Sequence[dict], *,
                      validator: str = DEFAULT_VALIDATOR) -> list[dict]:
    """Mean and sample std over seeds per (data set, method), plus the per-seed values.

    Args:
        runs: One dict per run with ``data``, ``method`` (the token), ``seed`` and
            ``metrics`` (its ``metrics.json``).
        validator: The label-free validator of the ``validator_*`` columns.

    Returns:
        One row per (data set, method) in first-seen order: ``data``, ``method``,
        ``n_seeds``, ``seeds``, ``<domain>_<metric>_mean`` / ``_std`` for each of
        :data:`COMPARE_METRICS` (std: ddof 1, 0.0 for one seed), ``target_accuracy_per_seed``
        and ``gap_closed`` (None without a ``source_only`` row for the data set); label-free:
        ``validator`` (its name), ``validator_mean`` / ``_std`` / ``_per_seed``,
        ``collapse_per_seed`` (the collapse flags), ``collapsed_seeds`` and
        ``sinkhorn_mean`` / ``_std`` (:func:`~sidda.evaluate.standings.label_free_columns`).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["data"], r["method"]), []).append(r)
    rows = []
    for (data, method), rs in groups.items():
        row: dict = {"data": data, "method": method, "n_seeds": len(rs),
                     "seeds": [r["seed"] for r in rs]}
        for domain, key in COMPARE_METRICS:
            mean, std, _ = _mean_std([_metric(r["metrics"], domain, key) for r in rs])
            row[f"{domain}_{key}_mean"], row[f"{domain}_{key}_std"] = mean, std
        row["target_accuracy_per_seed"] = [_metric(r["metrics"], "target", "accuracy")
                                           for r in rs]
        row.update(label_free_columns([r["metrics"] for r in rs], validator=validator))
        rows.append(row)
    for row in rows:
        so = next((r for r in rows if r["data"] == row["data"]
                   and r["method"] == "source_only"), None)
        row["gap_closed"] = None if so is None else gap_closed(
            row["target_accuracy_mean"], so["source_accuracy_mean"], so["target_accuracy_mean"])
    return rows


def best_row(rows: Sequence[dict]) -> dict | None:
    """The row with the highest mean target accuracy (None when no row has one)."""
    scored = [r for r in rows if r["target_accuracy_mean"] is not None]
    return max(scored, key=lambda r: r["target_accuracy_mean"]) if scored else None


def by_data(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """Rows grouped by data set, in first-seen order."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["data"], []).append(r)
    return out


def run_row(r: dict) -> dict:
    """One run as a ``compare.csv`` row: its names, checkpoint, :data:`RUN_METRICS` and the
    label-free numbers: the collapse flag, the domain distances and every validator's score
    (``validator_<name>``)."""
    m = r["metrics"]
    row = {"data": r["data"], "method": r["method"], "loss_method": m.get("method"),
           "variant": r["variant"], "seed": r["seed"], "model": m.get("model"),
           "checkpoint": m.get("checkpoint"), "checkpoint_epoch": m.get("checkpoint_epoch")}
    row.update({f"{d}_{k}": _metric(m, d, k) for d, k in RUN_METRICS})
    facts = run_facts(m)
    dist = (m.get("label_free") or {}).get("domain_distance") or {}
    row.update(collapse=facts.collapse, sinkhorn_fixed_blur=facts.distance, pad=dist.get("pad"))
    row.update({f"validator_{k}": facts.validators.get(k) for k in VALIDATORS})
    return row | {"run_dir": str(r["run_dir"])}


def run_label(r: dict) -> str:
    """A run of a comparison in tables: ``METHOD seed K``."""
    return f"{r['method']} seed {r['seed']}"


def compare_standings(results: Sequence[dict], *, validator: str = DEFAULT_VALIDATOR
                      ) -> dict[str, dict]:
    """Per data set, :func:`~sidda.evaluate.standings.standings` of its runs grouped by method:
    the label-free ranking when no run has target labels, else the validators' agreement with
    target accuracy."""
    out: dict[str, dict] = {}
    for data in dict.fromkeys(r["data"] for r in results):
        groups: dict[str, list] = {}
        for r in results:
            if r["data"] == data:
                groups.setdefault(r["method"], []).append((run_label(r), r["metrics"]))
        out[data] = standings(groups, validator=validator)
    return out
