"""Sweeps: several models x seeds x methods on one data set with one config.

:func:`run_sweep` trains and evaluates every combination into
``OUT/runs/<model>_<method>_seed<k>`` and then writes, into ``OUT``:

* ``summary.csv`` / ``summary.json`` / ``summary.txt`` - per (model, method): accuracy, ECE,
  Brier (and the temperature-scaled ECE) on both domains, mean and sample standard deviation
  over seeds (:func:`summarize`);
* ``figure5.png`` - the paper's Figure 5: a domain distance of the validation latents
  against epoch, one line per model, mean and +-1 std over seeds (:func:`distance_curves`);
* ``report.html`` - the HTML report of every run, with the table and the figure on top.

A run that is already complete (evaluated) with the same config and the same training data
(the SHA-256 checksums it recorded) is reused, so an interrupted sweep resumes where it
stopped; a run whose training finished but whose evaluation did not (or whose evaluation files
are damaged) is only evaluated; one with another config, or trained on data that changed since,
is an error unless ``force`` retrains it. :func:`ensure_run` holds these rules and
:func:`method_loss` the rule for switching a base config to another method; ``sidda compare``
(:mod:`sidda.compare`) uses both.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataError
from sidda.errors import InputError, one_line
from sidda.evaluate.curves import CurveStats, distance_curves, group_curves
from sidda.evaluate.curves import mean_std as _mean_std
from sidda.experiments import evaluate_runs, resume_run, run_config, train_run
from sidda.experiments.data import changed_data
from sidda.methods import method_class
from sidda.methods.config import METHOD_NAMES, method_loss
from sidda.plots import distance_by_group
from sidda.report import write_report
from sidda.runs import (
    EPOCH_CHECKPOINT,
    DamagedFileError,
    RunDir,
    RunState,
    atomic_write,
    write_csv,
    write_json,
)
from sidda.train import TrainingInterrupted, resolve_device

__all__ = [
    "RERUN_HINT",
    "CurveStats",
    "SweepResult",
    "check_checkpoint_plan",
    "check_methods_available",
    "check_out_folder",
    "distance_curves",
    "ensure_run",
    "format_table",
    "group_curves",
    "method_loss",
    "run_name",
    "run_sweep",
    "summarize",
]

logger = logging.getLogger(__name__)

#: What an interrupted sweep or comparison says to do (its finished runs are reused, the
#: interrupted one resumes from its last.pt).
RERUN_HINT = ("rerun the same sidda {command} command to continue: finished runs are reused and "
              "this one resumes from its last checkpoint")

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


def summarize(reports: Sequence[dict]) -> list[dict]:
    """Mean and standard deviation over seeds, per (model, method).

    Args:
        reports: ``metrics.json`` dicts (each with ``model`` and ``method``).

    Returns:
        One row per group in first-seen order: ``model``, ``method``, ``n_seeds`` and, for
        each metric of :data:`SUMMARY_METRICS`, ``<domain>_<metric>_mean`` and ``..._std``
        (sample std, ddof = 1; 0.0 for a single seed; None when no run has the value).
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
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The :func:`summarize` rows as a fixed-width text table, ``mean +- std``."""
    head = f"{'model':<8}{'method':<13}{'seeds':>5}  " + "".join(
        f"{d[:3] + '_' + k:<17}" for d, k in SUMMARY_METRICS)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for d, k in SUMMARY_METRICS:
            m, s = r[f"{d}_{k}_mean"], r[f"{d}_{k}_std"]
            cells.append(("-" if m is None else f"{m:.3f}+-{s:.3f}").ljust(17))
        lines.append(f"{r['model']:<8}{r['method']:<13}{r['n_seeds']:>5}  " + "".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------- methods and runs


def check_methods_available(methods: Sequence[str]) -> None:
    """Raise :class:`ConfigError` unless every method's module imports (before any training)."""
    for m in dict.fromkeys(methods):
        if m == "source_only":
            continue
        try:
            method_class(m)
        except (ImportError, AttributeError) as e:
            raise ConfigError(
                f"method {m!r} is not available in this installation ({one_line(e)}); "
                "leave it out of the list"
            ) from None


def check_checkpoint_plan(checkpoint: str, cfg: RunConfig) -> None:
    """Refuse, before anything is trained, an epoch checkpoint that the runs will not have.

    >>> check_checkpoint_plan("final", RunConfig())
    """
    if not EPOCH_CHECKPOINT.fullmatch(checkpoint):
        return
    epoch = int(checkpoint.split("_")[1])
    if not cfg.train.keep_epoch_checkpoints:
        raise ConfigError(f"--checkpoint {checkpoint}: the runs keep no epoch checkpoints; set "
                          "train.keep_epoch_checkpoints=true, or use final, best_val_acc, "
                          "best_val_loss or a label-free rule")
    if not 1 <= epoch <= cfg.train.epochs:
        raise ConfigError(f"--checkpoint {checkpoint}: the runs train {cfg.train.epochs} "
                          f"epochs; choose an epoch in 1..{cfg.train.epochs}")


def check_out_folder(out: Path) -> None:
    """``out`` may hold runs: absent, or a folder (an existing file is refused)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder (it will hold runs/ and the "
                         "tables), e.g. results/mine")


def _cannot_reuse(run: RunDir, problem: str) -> InputError:
    return InputError(f"{problem}; delete {run.path} to train that run again, or pass --force "
                      "to train every run again")


def _reusable_state(run: RunDir, cfg: RunConfig) -> RunState:
    """How far ``run`` got, once it is known to be a run of ``cfg`` on today's data.

    Raises:
        ConfigError: ``run`` holds a run of another config (compared as resolved configs: a
            key an older ``config.yaml`` lacks takes its default).
        DataError: a finished ``run`` was trained on files that changed since.
        InputError: ``config.yaml`` is damaged.
    """
    if run.config_path.is_file():
        try:
            old = run_config(run)
        except DamagedFileError as e:
            raise _cannot_reuse(run, f"{e.path}: damaged ({e.reason})") from None
        if old.to_dict() != cfg.to_dict():
            raise ConfigError(f"{run.path} exists with a different config; choose another "
                              "--out, or pass --force to retrain it")
    state = run.state
    if state >= RunState.TRAINED and (changed := changed_data(run, cfg)):
        raise DataError(
            f"{run.path} was trained on data that changed since ({', '.join(changed)}: SHA-256 "
            f"differs from its environment.json); delete {run.path} or pass --force to train "
            f"again on the data now, or restore the data it was trained on ({cfg.data.path})")
    return state


def ensure_run(
    run_cfg: RunConfig,
    *,
    checkpoint: str = "final",
    force: bool = False,
    argv: Sequence[str] = (),
    callbacks: Sequence = (),
    label: str = "",
) -> dict:
    """Train and evaluate one run unless its directory already holds it; its ``metrics.json``.

    A finished run with the same config and training data is reused: its metrics as they are
    when they are of ``checkpoint`` and complete (:meth:`~sidda.runs.RunDir.needs_evaluation`),
    else it is evaluated again; a run whose training finished is evaluated; an interrupted one
    (stopped by a signal, killed, or a machine that went down) is resumed from its
    ``last.pt`` (:func:`~sidda.experiments.resume_run`; from the start when it has none);
    anything else (no directory) is trained and evaluated.

    Raises:
        ConfigError, DataError: the directory holds a run of another config, or one trained on
            data that changed since, and ``force`` is False.
        InputError: a reused run lost a file it needs (a checkpoint, a damaged file); the
            message says to delete it or to pass ``force``.
    """
    run = RunDir(run_cfg.run_dir)
    label = label or run.name
    if run.path.exists() and not run.path.is_dir():
        raise InputError(f"{run.path} is a file where this run's folder belongs; remove it, or "
                         "choose another --out")
    device = str(resolve_device(run_cfg.train.device))
    state = RunState.ABSENT if force else _reusable_state(run, run_cfg)
    if state == RunState.EVALUATED:
        metrics = run.metrics() or {}
        if checkpoint in (metrics.get("checkpoint_rule"), metrics.get("checkpoint")):
            logger.info("%s: already trained and evaluated, reused", label)
            return metrics
        logger.info("%s: already trained, evaluating checkpoint %s", label, checkpoint)
    elif state == RunState.TRAINED:
        logger.info("%s: already trained, evaluating", label)
    elif state == RunState.SET_UP or (state == RunState.SETTING_UP
                                      and run.config_path.is_file()):
        logger.info("%s: interrupted earlier, resuming it", label)  # from last.pt, if any
        resume_run(run.path, argv=argv, callbacks=callbacks)
    else:
        logger.info("training %s", label)
        train_run(run_cfg, argv=argv, force=True, callbacks=callbacks)
    try:
        return evaluate_runs([run], when="always", checkpoint=checkpoint, device=device)[0]
    except (FileNotFoundError, DamagedFileError) as e:
        if state < RunState.TRAINED:
            raise
        problem = f"{e.path}: damaged ({e.reason})" if isinstance(e, DamagedFileError) else e
        raise _cannot_reuse(run, str(problem)) from None


# --------------------------------------------------------------------------- the sweep


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
) -> SweepResult:
    """Train and evaluate every (model, seed, method) and write the summary, figure and report.

    Args:
        cfg: The base config; ``name``, ``out_dir``, ``model.name``, ``loss.method`` and
            ``train.seed`` are set per run.
        models: Model names, e.g. ``["cnn", "d1", "d2", "d4", "d8"]``.
        seeds: Training seeds.
        out: The sweep folder.
        methods: Any of ``LossConfig``'s methods (default ``source_only`` and ``sidda``);
            each run keeps only its method's own options of ``cfg.loss`` (:func:`method_loss`).
        checkpoint: Checkpoint whose test metrics enter the table.
        force: Retrain runs that exist.
        report: Also write ``report.html``.
        argv: Command line, recorded in each run.
        callbacks: Passed to training.

    Raises:
        ConfigError: a bad model name or method, before anything is trained.
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
    check_methods_available(methods)
    check_checkpoint_plan(checkpoint, cfg)
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", {"models": list(models), "seeds": list(seeds),
                                    "methods": list(methods), "checkpoint": checkpoint,
                                    "config": cfg.to_dict()})
    runs, reports = [], []
    for i, run_cfg in enumerate(plan, 1):
        try:
            reports.append(ensure_run(run_cfg, checkpoint=checkpoint, force=force, argv=argv,
                                      callbacks=callbacks,
                                      label=f"[{i}/{len(plan)}] {run_cfg.run_dir.name}"))
        except TrainingInterrupted as e:
            raise e.with_hint(RERUN_HINT.format(command="sweep")) from None
        runs.append(run_cfg.run_dir)
    rows = summarize(reports)
    summary = out / "summary"  # .csv, .txt and .json
    write_csv(summary.with_suffix(".csv"), rows)
    atomic_write(summary.with_suffix(".txt"), format_table(rows) + "\n")
    write_json(summary.with_suffix(".json"), {"rows": rows, "runs": [str(r) for r in runs]})
    figure = _figure5(out, plan, runs, warmup=cfg.train.warmup)
    page = None
    if report:  # every run is evaluated (ensure_run): the page only renders
        page = write_report(runs, out / "report.html", title=f"sidda sweep: {out.name}",
                            extra_html=_sweep_html(rows, figure))
    return SweepResult(out, runs, rows, figure, page)


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


def _sweep_html(rows: list[dict], figure: Path | None) -> str:
    head = ["model", "method", "seeds"] + [f"{d} {k}" for d, k in SUMMARY_METRICS]
    cells = []
    for r in rows:
        vals = [r["model"], r["method"], str(r["n_seeds"])]
        for d, k in SUMMARY_METRICS:
            m, s = r[f"{d}_{k}_mean"], r[f"{d}_{k}_std"]
            vals.append("\u2013" if m is None else f"{m:.4f} \u00b1 {s:.4f}")
        cells.append("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>")
    text = ("<h2 id='sweep'>Sweep: mean \u00b1 std over seeds</h2>"
            "<p class='note'>ece_ts: target ECE after temperature scaling fitted on source "
            "validation data. Std: sample standard deviation (ddof 1).</p><table><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(cells) + "</tbody></table>")
    if figure is not None:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        text += ("<h3>Domain distance against epoch (the paper's Figure 5)</h3>"
                 f"<img src='data:image/png;base64,{data}' alt='distance against epoch'>")
    return text

