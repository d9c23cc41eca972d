"""Sweeps: several models x seeds x methods on one data set with one config.

:func:`run_sweep` trains and evaluates every combination into
``OUT/runs/<model>_<method>_seed<k>`` and then writes, into ``OUT``:

* ``summary.csv`` / ``summary.json`` / ``summary.txt`` - per (model, method): accuracy, ECE,
  Brier (and the temperature-scaled ECE) on both domains, mean and sample standard deviation
  over seeds (:func:`summarize`), with the label-free columns (collapse flags, a validator's
  score, the domain distance); ``summary.json`` adds the configs and runs ranked by the
  validator when no run has target labels, else each validator's agreement with target accuracy
  (:func:`~sidda.evaluate.standings.standings`), also in ``sweep_agreement.csv``;
* ``figure5.png`` - the paper's Figure 5: a domain distance of the validation latents
  against epoch, one line per model, mean and +-1 std over seeds
  (:func:`~sidda.evaluate.curves.distance_curves`);
* ``report.html`` - the HTML report of every run, with the table and the figure on top.

A run that is already complete (evaluated) with the same config and the same training data
(the SHA-256 checksums it recorded) is reused, so an interrupted sweep resumes where it
stopped; a run whose training finished but whose evaluation did not (or whose evaluation files
are damaged) is only evaluated; one with another config, or trained on data that changed since,
is an error unless ``force`` retrains it (:func:`sidda.experiments.reuse.ensure_run`, which
``sidda compare`` uses too, as it uses :func:`~sidda.methods.config.method_loss`, the rule for
switching a base config to another method).
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from sidda.config import ConfigError, RunConfig
from sidda.evaluate.curves import distance_curves
from sidda.evaluate.curves import mean_std as _mean_std
from sidda.evaluate.standings import (
    AGREEMENT_FIELDS,
    agreement_rows,
    collapse_cell,
    label_free_columns,
    standings,
    standings_tables,
)
from sidda.experiments.data import DataChecksums
from sidda.experiments.preflight import plan_warnings
from sidda.experiments.reuse import check_plan, ensure_run
from sidda.methods.config import METHOD_NAMES, method_loss
from sidda.metrics.ranking import DEFAULT_VALIDATOR
from sidda.plots import distance_by_group
from sidda.report import write_report
from sidda.runs import (
    RunDir,
    atomic_write,
    write_csv,
    write_json,
)

__all__ = ["SweepResult", "format_table", "run_name", "run_sweep", "summarize"]

logger = logging.getLogger(__name__)

#: Methods a sweep accepts (every ``LossConfig`` method) and those it runs by default.
METHODS = METHOD_NAMES
DEFAULT_METHODS = ("source_only", "sidda")
#: (domain, metric) columns of the summary table; ``ece_ts``: ECE after temperature scaling.
SUMMARY_METRICS = (
    ("source", "accuracy"), ("target", "accuracy"), ("source", "ece"), ("target", "ece"),
    ("target", "ece_ts"), ("source", "brier"), ("target", "brier"),
)


class SweepResult(NamedTuple):
    """What :func:`run_sweep` made."""

    out: Path  #: the sweep folder
    runs: list[Path]  #: run directories, in (model, seed, method) order
    rows: list[dict]  #: :func:`summarize` rows
    figure: Path | None  #: figure5.png, or None when no run logged a distance
    report: Path | None  #: report.html, or None when not asked for
    standings: dict  #: :func:`~sidda.evaluate.standings.standings` of the runs, by config


def run_name(model: str, method: str, seed: int) -> str:
    """``<model>_<method>_seed<seed>``, the run folder name inside a sweep (a custom model's
    ``module:callable`` gives ``module-callable``).

    >>> run_name("nets.res:make", "dan", 2)
    'nets.res-make_dan_seed2'
    """
    return f"{model.replace(':', '-')}_{method}_seed{seed}"


# --------------------------------------------------------------------------- statistics


def _metric(report: dict, domain: str, key: str) -> float | None:
    d = report.get(domain, {})
    if key == "ece_ts":
        return d.get("temperature_scaled", {}).get("ece")
    return d.get(key)


def summarize(reports: Sequence[dict], *, validator: str = DEFAULT_VALIDATOR) -> list[dict]:
    """Mean and standard deviation over seeds, per (model, method).

    Args:
        reports: ``metrics.json`` dicts (each with ``model`` and ``method``).
        validator: The label-free validator of the ``validator_*`` columns.

    Returns:
        One row per group in first-seen order: ``model``, ``method``, ``n_seeds`` and, for
        each metric of :data:`SUMMARY_METRICS`, ``<domain>_<metric>_mean`` and ``..._std``
        (sample std, ddof = 1; 0.0 for a single seed; None when no run has the value), and
        the label-free columns (:func:`~sidda.evaluate.standings.label_free_columns`).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for rep in reports:
        groups.setdefault((rep["model"], rep["method"]), []).append(rep)
    rows = []
    for (model, method), reps in groups.items():
        row: dict = {"model": model, "method": method, "n_seeds": len(reps)}
        for domain, key in SUMMARY_METRICS:
            mean, std, _ = _mean_std([_metric(r, domain, key) for r in reps])
            row[f"{domain}_{key}_mean"], row[f"{domain}_{key}_std"] = mean, std
        rows.append(row | label_free_columns(reps, validator=validator))
    return rows


def _cells(row: dict, *, digits: int = 3, pm: str = "+-", missing: str = "-") -> list[str]:
    """The ``mean+-std`` cells of a :func:`summarize` row: :data:`SUMMARY_METRICS`, then the
    label-free validator and the domain distance."""
    keys = [f"{d}_{k}" for d, k in SUMMARY_METRICS] + ["validator", "sinkhorn"]
    return [missing if row.get(f"{k}_mean") is None else
            f"{row[f'{k}_mean']:.{digits}f}{pm}{row[f'{k}_std']:.{digits}f}" for k in keys]


def format_table(rows: Sequence[dict]) -> str:
    """The :func:`summarize` rows as a fixed-width text table, ``mean +- std``, with the
    label-free columns: the collapse flags, the validator's score and the domain distance
    (Sinkhorn divergence, blur 1.0, of source validation and target test latents)."""
    v = rows[0].get("validator", DEFAULT_VALIDATOR) if rows else DEFAULT_VALIDATOR
    head = f"{'model':<8}{'method':<13}{'seeds':>5}  " + "".join(
        f"{d[:3] + '_' + k:<17}" for d, k in SUMMARY_METRICS) + f"{v.upper():<17}{'sinkhorn':<17}"
    lines = [head + "collapse", "-" * (len(head) + 8)]
    for r in rows:
        lines.append(f"{r['model']:<8}{r['method']:<13}{r['n_seeds']:>5}  " + "".join(
            c.ljust(17) for c in _cells(r)) + collapse_cell(r.get("collapse_per_seed", [])))
    return "\n".join(lines)


def run_sweep(
    cfg: RunConfig,
    *,
    models: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    methods: Sequence[str] = DEFAULT_METHODS,
    checkpoint: str = "final",
    force: bool = False,
    report: bool = True,
    argv: Sequence[str] = (),
    callbacks: Sequence = (),
    validator: str | None = None,
) -> SweepResult:
    """Train and evaluate every (model, seed, method) and write the summary, figure and report.

    Args:
        cfg: The base config; ``name``, ``out_dir``, ``model.name``, ``loss.method`` and
            ``train.seed`` are set per run.
        models: Model names, e.g. ``["cnn", "d1", "d2", "d4", "d8"]``.
        seeds: Training seeds.
        out: The sweep folder.
        methods: Any of ``LossConfig``'s methods (default ``source_only`` and ``sidda``);
            each run keeps only its method's own options of ``cfg.loss``
            (:func:`~sidda.methods.config.method_loss`).
        checkpoint: Checkpoint whose test metrics enter the table.
        force: Retrain runs that exist.
        report: Also write ``report.html``.
        argv: Command line, recorded in each run.
        callbacks: Passed to training.
        validator: The label-free validator of the table and of the ranking without target
            labels (None: :data:`~sidda.metrics.DEFAULT_VALIDATOR`); named explicitly, it must
            be able to score the data's target test images
            (:func:`~sidda.experiments.reuse.check_validator`).

    Raises:
        ConfigError: a bad model name or method; InputError: an unknown validator, or one
            named that cannot score the target; before anything is trained.
    """
    if not models or not seeds or not methods:
        raise ConfigError("a sweep needs at least one model, one seed and one method")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    out = Path(out)
    plan = []
    for model in models:
        for seed in seeds:
            for method in methods:
                d = cfg.to_dict()
                d.update(name=run_name(model, method, seed), out_dir=str(out / "runs"))
                d["model"]["name"], d["train"]["seed"] = model, seed
                d["loss"] = method_loss(d["loss"], method)
                plan.append(RunConfig.from_dict(d))  # validates every name before training
    chosen = check_plan(cfg, methods=methods, data={str(cfg.data.path): cfg.data},
                        validator=validator, checkpoint=checkpoint, out=out)
    for line in plan_warnings(plan):
        logger.warning("%s", line)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", {"models": list(models), "seeds": list(seeds),
                                    "methods": list(methods), "checkpoint": checkpoint,
                                    "validator": chosen, "config": cfg.to_dict()})
    runs, reports, checksums = [], [], DataChecksums()
    for i, run_cfg in enumerate(plan, 1):
        reports.append(ensure_run(run_cfg, checkpoint=checkpoint, force=force, argv=argv,
                                  callbacks=callbacks, checksums=checksums, command="sweep",
                                  label=f"[{i}/{len(plan)}] {run_cfg.run_dir.name}"))
        runs.append(run_cfg.run_dir)
    rows = summarize(reports, validator=chosen)
    groups: dict[str, list] = {}
    for run_cfg, rep in zip(plan, reports, strict=True):
        groups.setdefault(f"{run_cfg.model.name} {run_cfg.loss.method}", []).append(
            (run_cfg.name, rep))
    standing = standings(groups, validator=chosen)
    summary = out / "summary"  # .csv, .txt and .json
    write_csv(summary.with_suffix(".csv"), rows)
    atomic_write(summary.with_suffix(".txt"), format_table(rows) + "\n")
    write_json(summary.with_suffix(".json"), {"rows": rows, "runs": [str(r) for r in runs],
                                              **standing})
    write_csv(out / "sweep_agreement.csv", agreement_rows(standing["agreement"],
                                                          validator=chosen)
              if standing["agreement"] else [], fields=AGREEMENT_FIELDS)
    figure = _figure5(out, plan, runs, warmup=cfg.train.warmup)
    page = None
    if report:  # every run is evaluated (ensure_run): the page only renders
        page = write_report(runs, out / "report.html", title=f"sidda sweep: {out.name}",
                            extra_html=_sweep_html(rows, figure, standing))
    return SweepResult(out, runs, rows, figure, page, standing)


def _figure5(out: Path, plan: list[RunConfig], runs: list[Path], *, warmup: int) -> Path | None:
    histories: dict[str, list[list[dict]]] = {}
    for run_cfg, run_dir in zip(plan, runs, strict=True):
        label = f"{run_cfg.model.name} / {run_cfg.loss.method}"
        histories.setdefault(label, []).append(RunDir(run_dir).history().epochs)
    curves = distance_curves(histories)
    if not curves:
        logger.warning("no run logged a domain distance; figure5.png not drawn")
        return None
    fig = distance_by_group(curves, warmup=warmup)
    fig.savefig(out / ".figure5.png", dpi=110)
    (out / ".figure5.png").replace(out / "figure5.png")
    return out / "figure5.png"


def _sweep_html(rows: list[dict], figure: Path | None, standing: dict) -> str:
    v = standing["validator"].upper()
    head = (["model", "method", "seeds"] + [f"{d} {k}" for d, k in SUMMARY_METRICS]
            + [f"{v} (label-free)", "domain distance", "collapse"])
    cells = []
    for r in rows:
        vals = [r["model"], r["method"], str(r["n_seeds"])] + _cells(
            r, digits=4, pm=" \u00b1 ", missing="\u2013")
        vals.append(collapse_cell(r.get("collapse_per_seed", [])))
        cells.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in vals) + "</tr>")
    text = ("<h2 id='sweep'>Sweep: mean \u00b1 std over seeds</h2>"
            "<p class='note'>ece_ts: target ECE after temperature scaling fitted on source "
            "validation data. Std: sample standard deviation (ddof 1). Label-free (no target "
            f"label read): {v}, the validator's score (higher is better); domain distance, the "
            "Sinkhorn divergence (blur 1.0) of source validation and target test latents; "
            "collapse, the flag of the label-free diagnostics (docs/evaluation.md).</p>"
            + _html_table(head, cells))
    for sentence, h, body in standings_tables(standing, what="config"):
        text += f"<p>{html.escape(sentence)}</p>" + _html_table(h, [
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in body])
    if figure is not None:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        text += ("<h3>Domain distance against epoch (the paper's Figure 5)</h3>"
                 f"<img src='data:image/png;base64,{data}' alt='distance against epoch'>")
    return text


def _html_table(head: Sequence[str], rows: Sequence[str]) -> str:
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
