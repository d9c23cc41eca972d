"""Run a comparison: plan every (data set, method, seed), train and evaluate, write the results.

Every run config is validated and every data folder checked before anything is trained (and a
``--checkpoint epoch_0005`` the runs will not keep is refused then); finished runs are reused
and an interrupted one resumes (:func:`sidda.experiments.reuse.ensure_run`), so after SIGTERM or
a kill the
same command continues. Runs of an earlier comparison in the same folder that this one does not
list are left out of its tables, with a warning that names them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from sidda.compare.page import compare_html
from sidda.compare.plan import PLAIN_NAME, MethodSpec, check_data, parse_method
from sidda.compare.summary import (
    best_row,
    by_data,
    compare_standings,
    run_row,
    summarize_compare,
)
from sidda.compare.tables import format_markdown, format_text
from sidda.config import ConfigError, RunConfig
from sidda.evaluate.standings import AGREEMENT_FIELDS, agreement_rows
from sidda.experiments.data import DataChecksums
from sidda.experiments.preflight import plan_warnings
from sidda.experiments.reuse import check_plan, ensure_run
from sidda.methods.config import method_loss
from sidda.report import write_report
from sidda.runs import atomic_write, write_csv, write_json

__all__ = ["CompareResult", "run_compare"]

logger = logging.getLogger(__name__)


class CompareResult(NamedTuple):
    """What :func:`run_compare` made."""

    out: Path  #: the comparison folder
    runs: list[Path]  #: run directories, in (data set, method, seed) order
    rows: list[dict]  #: :func:`summarize_compare` rows
    markdown: str  #: the text of ``compare.md``
    text: str  #: the text of ``compare.txt``
    report: Path | None  #: report.html, or None when not asked for
    standings: dict  #: per data set, :func:`~sidda.compare.summary.compare_standings`


def run_compare(
    cfg: RunConfig,
    *,
    data: Mapping[str, str | Path],
    methods: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    model: str | None = None,
    checkpoint: str = "final",
    force: bool = False,
    report: bool = True,
    argv: Sequence[str] = (),
    callbacks: Sequence = (),
    validator: str | None = None,
) -> CompareResult:
    """Train and evaluate every (data set, method, seed) and write the tables and the report.

    Args:
        cfg: The base config; ``name``, ``out_dir``, ``data.path``, ``model.name``, ``loss``
            and ``train.seed`` are set per run.
        data: Data set name -> data folder (:func:`parse_data`).
        methods: Method tokens (:func:`parse_method`), e.g. ``["source_only", "sidda",
            "sidda:robust", "dan"]``.
        seeds: Training seeds.
        out: The comparison folder.
        model: Model of every run (default: ``cfg.model.name``).
        checkpoint: Checkpoint whose test metrics enter the tables.
        force: Retrain runs that exist.
        report: Also write ``report.html``.
        argv: Command line, recorded in each run.
        callbacks: Passed to training.
        validator: The label-free validator of the tables, of the ranking of a data set
            without target labels, and starred in the agreement tables (None:
            :data:`~sidda.metrics.DEFAULT_VALIDATOR`). Named explicitly, it must be computable
            on every data set's target test images
            (:func:`~sidda.experiments.reuse.check_plan`).

    Raises:
        ConfigError, DataError: a bad method, variant, seed list, data name or folder, or a
            run config that does not validate; InputError: an unknown validator, or one named
            that cannot score a data set's target; raised before anything is written.
    """
    if not data or not methods or not seeds:
        raise ConfigError("a comparison needs at least one data set, one method and one seed")
    specs = [parse_method(m) for m in methods]
    seen: dict[tuple, str] = {}
    for s in specs:
        if s.key in seen:
            raise ConfigError(f"--methods lists {seen[s.key]!r} and {s.token!r},"
                              " the same method; list it once")
        seen[s.key] = s.token
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {list(seeds)}")
    data = {name: Path(p) for name, p in data.items()}
    for name in data:
        if not PLAIN_NAME.fullmatch(name):
            raise ConfigError(f"data set name {name!r} must be a plain name, e.g. shapes")
    out = Path(out)
    model = model or cfg.model.name
    plan: list[tuple[str, MethodSpec, int, RunConfig]] = []
    for name, path in data.items():
        for spec in specs:
            for seed in seeds:
                d = cfg.to_dict()
                d.update(name=f"{spec.folder}_seed{seed}", out_dir=str(out / "runs" / name))
                d["data"]["path"], d["model"]["name"], d["train"]["seed"] = str(path), model, seed
                d["loss"] = method_loss(d["loss"], spec.method, variant=spec.variant,
                                        domain_bn=spec.domain_bn)
                try:
                    run_cfg = RunConfig.from_dict(d)
                except ConfigError as e:
                    raise ConfigError(f"{name} / {spec.token} / seed {seed}: {e}") from None
                plan.append((name, spec, seed, run_cfg))
        check_data(name, plan[-1][3])
    chosen = check_plan(cfg, methods=[s.method for s in specs], validator=validator,
                        data={f"--data {p[0]}": p[3].data for p in plan},
                        checkpoint=checkpoint, out=out)
    info = {"data": {k: str(v) for k, v in data.items()}, "methods": [s.token for s in specs],
            "seeds": list(seeds), "model": model, "checkpoint": checkpoint,
            "loss": {s.token: method_loss(cfg.to_dict()["loss"], s.method, variant=s.variant,
                                          domain_bn=s.domain_bn) for s in specs},
            "config": cfg.to_dict()}
    info["validator"] = chosen
    logger.info("compare: %d runs (%d data sets x %d methods x %d seeds, model %s) into %s",
                len(plan), len(data), len(specs), len(seeds), model, out)
    for name in data:
        for line in plan_warnings([p[3] for p in plan if p[0] == name]):
            logger.warning("--data %s: %s", name, line)
    out.mkdir(parents=True, exist_ok=True)
    _note_left_out(out, {(name, spec.token, seed) for name, spec, seed, _ in plan})
    write_json(out / "compare_plan.json", info)
    runs, results, checksums = [], [], DataChecksums()
    for i, (name, spec, seed, run_cfg) in enumerate(plan, 1):
        metrics = ensure_run(run_cfg, checkpoint=checkpoint, force=force, argv=argv,
                             callbacks=callbacks, checksums=checksums, command="compare",
                             label=f"[{i}/{len(plan)}] {name}/{run_cfg.name}")
        runs.append(run_cfg.run_dir)
        results.append({"data": name, "method": spec.token, "variant": spec.variant,
                        "seed": seed, "metrics": metrics, "run_dir": run_cfg.run_dir})
    rows = summarize_compare(results, validator=chosen)
    standing = compare_standings(results, validator=chosen)
    bins = {r["metrics"].get("n_bins") for r in results}
    info["n_bins"] = bins.pop() if len(bins) == 1 else None  # None: the runs differ
    write_csv(out / "compare.csv", [run_row(r) for r in results])
    write_csv(out / "compare_summary.csv", rows)
    write_csv(out / "compare_agreement.csv", [
        row for data, st in standing.items() if st["agreement"]
        for row in agreement_rows(st["agreement"], validator=chosen, data=data)],
        fields=("data", *AGREEMENT_FIELDS))
    best = {data: b["method"] for data, rs in by_data(rows).items() if (b := best_row(rs))}
    write_json(out / "compare.json", {
        "rows": rows, "best_on_target": best, "plan": info, "runs": [run_row(r) for r in results],
        "agreement": {d: st["agreement"] for d, st in standing.items() if st["agreement"]},
        "ranking": {d: st["ranking"] for d, st in standing.items() if st["ranking"]}})
    markdown = format_markdown(rows, info, standing)
    text = format_text(rows, info, standing)
    atomic_write(out / "compare.md", markdown)
    atomic_write(out / "compare.txt", text)
    page = None
    if report:  # every run is evaluated (ensure_run): the page only renders
        page = write_report(runs, out / "report.html", title=f"sidda compare: {out.name}",
                            extra_html=compare_html(rows, info, standing))
    return CompareResult(out, runs, rows, markdown, text, page, standing)


def _note_left_out(out: Path, planned: set[tuple[str, str, int]]) -> None:
    """Say which runs of an earlier comparison in ``out`` this one's tables leave out."""
    try:
        old = json.loads((out / "compare_plan.json").read_text(encoding="utf-8"))
        earlier = {(d, m, int(s)) for d in old["data"] for m in old["methods"]
                   for s in old["seeds"]}
    except (OSError, ValueError, KeyError, TypeError):
        return  # no earlier comparison here (or not one we can read): nothing to say
    left = sorted(earlier - planned)
    if left:
        shown = ", ".join(f"{d}/{m}/seed {s}" for d, m, s in left[:6])
        more = f" and {len(left) - 6} more" if len(left) > 6 else ""
        logger.warning("%s: the tables hold this command's runs only; %d run(s) of an earlier "
                       "comparison here are left out of compare.md and compare.csv (%s%s; "
                       "their folders stay in %s): list their data sets, methods and seeds "
                       "again to include them", out, len(left), shown, more, out / "runs")
