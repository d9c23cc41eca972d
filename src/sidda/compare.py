"""Comparisons: methods x seeds x data sets with one base config and one model.

:func:`run_compare` trains and evaluates every combination into
``OUT/runs/<data>/<method>_seed<k>`` (``sidda:robust`` becomes the folder ``sidda-robust``)
and then writes, into ``OUT``:

* ``compare_plan.json`` - the data sets, methods, seeds, model and base config (written first);
* ``compare.csv`` - one row per (data set, method, seed): accuracy, ECE, Brier, NLL per domain;
* ``compare_summary.csv`` / ``compare.json`` - per (data set, method): mean and sample standard
  deviation (ddof 1) over seeds of the :data:`COMPARE_METRICS`, and the per-seed target
  accuracies;
* ``compare.md`` - one markdown table per data set (rows: methods), the method best on target
  and, when ``source_only`` is compared, the share of the domain gap each method closes,
  ``(acc_t(method) - acc_t(source_only)) / (acc_s(source_only) - acc_t(source_only))``;
* ``compare.txt`` - the same tables as plain text;
* ``report.html`` - the HTML report of every run with the comparison (tables and a bar chart
  of target accuracy per method) on top.

A method token is ``METHOD`` or ``METHOD:VARIANT`` (only sidda has variants: ``sidda:paper``,
``sidda:robust``; a plain ``sidda`` is the default variant, ``robust``). Each run's ``loss``
section is the method (and variant) plus the base config's options of that method that differ
from the base method's defaults (:func:`sidda.methods.config.method_loss`). Every run config is
validated before anything is trained, and finished runs are reused
(:func:`sidda.sweep.ensure_run`), so an interrupted comparison continues where it stopped when it
is run again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataError, layout_paths
from sidda.methods.config import METHOD_NAMES, OPTIONS, VARIANTS
from sidda.runs import atomic_write, write_csv, write_json
from sidda.sweep import _mean_std, _metric, check_methods_available, ensure_run, method_loss

__all__ = [
    "COMPARE_METRICS",
    "CompareResult",
    "MethodSpec",
    "format_markdown",
    "format_text",
    "gap_closed",
    "parse_data",
    "parse_method",
    "run_compare",
    "summarize_compare",
]

logger = logging.getLogger(__name__)

#: (domain, metric) pairs summarised per (data set, method), in table order.
COMPARE_METRICS = (
    ("target", "accuracy"), ("source", "accuracy"), ("target", "ece"), ("target", "brier"),
    ("source", "ece"),
)
#: (domain, metric) columns of ``compare.csv``, one row per run.
_RUN_METRICS = tuple((d, k) for d in ("source", "target")
                     for k in ("accuracy", "ece", "brier", "nll")) + (("target", "ece_ts"),)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class MethodSpec(NamedTuple):
    """One entry of the method list."""

    token: str  #: as written in the table, e.g. ``sidda:robust``
    method: str  #: ``loss.method``
    variant: str | None  #: ``loss.variant`` (sidda only)

    @property
    def folder(self) -> str:
        """The token as a folder name (``:`` becomes ``-``)."""
        return self.token.replace(":", "-")


class CompareResult(NamedTuple):
    """What :func:`run_compare` made."""

    out: Path  #: the comparison folder
    runs: list[Path]  #: run directories, in (data set, method, seed) order
    rows: list[dict]  #: :func:`summarize_compare` rows
    markdown: str  #: the text of ``compare.md``
    text: str  #: the text of ``compare.txt``
    report: Path | None  #: report.html, or None when not asked for


def parse_method(token: str) -> MethodSpec:
    """``METHOD`` or ``METHOD:VARIANT`` as a :class:`MethodSpec`.

    >>> parse_method("sidda:robust")
    MethodSpec(token='sidda:robust', method='sidda', variant='robust')
    >>> parse_method("sidda").variant
    'robust'
    """
    token = token.strip()
    method, sep, variant = token.partition(":")
    if method not in METHOD_NAMES:
        raise ConfigError(
            f"unknown method {method!r} in --methods; choose from {', '.join(METHOD_NAMES)} "
            "(sidda also as sidda:paper or sidda:robust)"
        )
    if not sep:
        return MethodSpec(token, method, OPTIONS[method].get("variant"))  # type: ignore[arg-type]
    if "variant" not in OPTIONS[method]:
        raise ConfigError(f"method {method!r} has no variants; write {method} instead of {token}")
    if variant not in VARIANTS:
        raise ConfigError(
            f"unknown variant {variant!r} in {token!r}; choose from "
            f"{', '.join(f'{method}:{v}' for v in VARIANTS)}"
        )
    return MethodSpec(token, method, variant)


def parse_data(items: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` items (NAME: the folder's name) as ``{name: path}``.

    >>> parse_data(["shapes=data/shapes", "data/astro"])
    {'shapes': PosixPath('data/shapes'), 'astro': PosixPath('data/astro')}
    """
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name or Path(item).resolve().name, item
        name = name.strip()
        if not path.strip():
            raise ConfigError(f"--data {item!r} has no folder; write NAME=PATH")
        if not _PLAIN_NAME.fullmatch(name):
            raise ConfigError(
                f"--data {item!r}: the name {name!r} must be a plain name (letters, digits, "
                "'_', '-', '.'), e.g. shapes=data/shapes"
            )
        if name in out:
            raise ConfigError(
                f"--data: the name {name!r} is given twice; name them, e.g. {name}_a=PATH "
                f"{name}_b=PATH"
            )
        out[name] = Path(path)
    return out


def _check_data(name: str, cfg: RunConfig) -> None:
    """The data folder exists and holds the files the config reads (nothing is loaded)."""
    root, d = Path(cfg.data.path), cfg.data
    if not root.is_dir():
        raise DataError(f"--data {name}={root}: no such folder")
    paths = layout_paths(root, layout=d.layout, source_suffix=d.source_suffix,
                         target_suffix=d.target_suffix)
    for key, (x, y) in paths.items():
        for f in (x, y) if key.endswith("_s") else (x,):  # the target may be unlabelled
            if not f.is_file():
                raise DataError(
                    f"--data {name}={root}: {f.relative_to(root)} not found (data.layout "
                    f"{d.layout!r}, source_suffix {d.source_suffix!r}, target_suffix "
                    f"{d.target_suffix!r}); check the folder with `sidda data check {root}`"
                )


# --------------------------------------------------------------------------- statistics


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


def summarize_compare(runs: Sequence[dict]) -> list[dict]:
    """Mean and sample std over seeds per (data set, method), plus the per-seed values.

    Args:
        runs: One dict per run with ``data``, ``method`` (the token), ``seed`` and
            ``metrics`` (its ``metrics.json``).

    Returns:
        One row per (data set, method) in first-seen order: ``data``, ``method``,
        ``n_seeds``, ``seeds``, ``<domain>_<metric>_mean`` / ``_std`` for each of
        :data:`COMPARE_METRICS` (std: ddof 1, 0.0 for one seed), ``target_accuracy_per_seed``
        and ``gap_closed`` (None without a ``source_only`` row for the data set).
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
        rows.append(row)
    for row in rows:
        so = next((r for r in rows if r["data"] == row["data"]
                   and r["method"] == "source_only"), None)
        row["gap_closed"] = None if so is None else gap_closed(
            row["target_accuracy_mean"], so["source_accuracy_mean"], so["target_accuracy_mean"])
    return rows


def _best(rows: Sequence[dict]) -> dict | None:
    scored = [r for r in rows if r["target_accuracy_mean"] is not None]
    return max(scored, key=lambda r: r["target_accuracy_mean"]) if scored else None


def _by_data(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["data"], []).append(r)
    return out


# --------------------------------------------------------------------------- tables

_HEAD = ("method", "target acc (mean ± std)", "per seed", "source acc", "target ECE",
         "target Brier", "source ECE", "gap closed")


def _ms(row: dict, domain: str, key: str) -> str:
    m, s = row[f"{domain}_{key}_mean"], row[f"{domain}_{key}_std"]
    if m is None:
        return "–"
    return f"{m:.3f}" if row["n_seeds"] < 2 else f"{m:.3f} ± {s:.3f}"


def _cells(row: dict) -> list[str]:
    per_seed = ", ".join("–" if v is None else f"{v:.3f}"
                         for v in row["target_accuracy_per_seed"])
    gap = row["gap_closed"]
    return [row["method"], _ms(row, "target", "accuracy"), per_seed,
            _ms(row, "source", "accuracy"), _ms(row, "target", "ece"),
            _ms(row, "target", "brier"), _ms(row, "source", "ece"),
            "–" if gap is None else f"{100 * gap:.0f} %"]


def _notes(rows: Sequence[dict]) -> list[str]:
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


def _caption(plan: Mapping) -> str:
    seeds = ", ".join(str(s) for s in plan["seeds"])
    bins = plan.get("n_bins")
    return (f"Model {plan['model']}, checkpoint {plan['checkpoint']}; mean ± sample standard "
            f"deviation (ddof 1) over seeds {seeds}. Gap closed: (acc_t(method) - "
            "acc_t(source_only)) / (acc_s(source_only) - acc_t(source_only)). ECE: "
            f"{'' if bins is None else f'{bins} '}equal-width bins; Brier: multiclass, summed "
            "over classes (0 to 2).")


def format_markdown(rows: Sequence[dict], plan: Mapping) -> str:
    """The :func:`summarize_compare` rows as markdown: one table per data set."""
    parts = [_caption(plan), ""]
    for data, rs in _by_data(rows).items():
        parts += [f"### {data} (`{plan['data'][data]}`)", "",
                  "| " + " | ".join(_HEAD) + " |",
                  "|" + "|".join([":---", "---:", ":---"] + ["---:"] * (len(_HEAD) - 3)) + "|"]
        parts += ["| " + " | ".join(_cells(r)) + " |" for r in rs]
        parts += [""] + _notes(rs) + [""]
    return "\n".join(parts).rstrip() + "\n"


def format_text(rows: Sequence[dict], plan: Mapping) -> str:
    """The :func:`summarize_compare` rows as fixed-width plain text, as the CLI prints them."""
    parts = []
    for data, rs in _by_data(rows).items():
        table = [list(_HEAD)] + [_cells(r) for r in rs]
        widths = [max(len(row[i]) for row in table) for i in range(len(_HEAD))]
        lines = ["  ".join(c.ljust(w) if i in (0, 2) else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                 for row in table]
        lines.insert(1, "-" * len(lines[0]))
        parts.append(f"{data} ({plan['data'][data]})\n" + "\n".join(lines + _notes(rs)))
    return "\n\n".join(parts) + "\n\n" + _caption(plan) + "\n"


def _compare_html(rows: Sequence[dict], plan: Mapping) -> str:
    import html

    from sidda.report import figure_to_data_uri

    text = ["<h2 id='compare'>Comparison: methods x data sets</h2>",
            f"<p class='note'>{html.escape(_caption(plan))}</p>"]
    for data, rs in _by_data(rows).items():
        head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEAD)
        body = "".join("<tr>" + "".join(
            f"<td{' class=l' if i in (0, 2) else ''}>{html.escape(c)}</td>"
            for i, c in enumerate(_cells(r))) + "</tr>" for r in rs)
        notes = " ".join(_notes(rs))
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
    import numpy as np

    from sidda.plots import _figure

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


# --------------------------------------------------------------------------- the comparison


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

    Raises:
        ConfigError, DataError: a bad method, variant, seed list, data name or folder, or a
            run config that does not validate; raised before anything is written.
    """
    if not data or not methods or not seeds:
        raise ConfigError("a comparison needs at least one data set, one method and one seed")
    specs = [parse_method(m) for m in methods]
    seen: dict[tuple, str] = {}
    for s in specs:
        if (s.method, s.variant) in seen:
            raise ConfigError(f"--methods lists {seen[(s.method, s.variant)]!r} and {s.token!r},"
                              " the same method; list it once")
        seen[(s.method, s.variant)] = s.token
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {list(seeds)}")
    data = {name: Path(p) for name, p in data.items()}
    for name in data:
        if not _PLAIN_NAME.fullmatch(name):
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
                d["loss"] = method_loss(d["loss"], spec.method, variant=spec.variant)
                try:
                    run_cfg = RunConfig.from_dict(d)
                except ConfigError as e:
                    raise ConfigError(f"{name} / {spec.token} / seed {seed}: {e}") from None
                plan.append((name, spec, seed, run_cfg))
        _check_data(name, plan[-1][3])
    check_methods_available([s.method for s in specs])
    info = {"data": {k: str(v) for k, v in data.items()}, "methods": [s.token for s in specs],
            "seeds": list(seeds), "model": model, "checkpoint": checkpoint,
            "loss": {s.token: method_loss(cfg.to_dict()["loss"], s.method, variant=s.variant)
                     for s in specs},
            "config": cfg.to_dict()}
    logger.info("compare: %d runs (%d data sets x %d methods x %d seeds, model %s) into %s",
                len(plan), len(data), len(specs), len(seeds), model, out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare_plan.json", info)
    runs, results = [], []
    for i, (name, spec, seed, run_cfg) in enumerate(plan, 1):
        metrics = ensure_run(run_cfg, checkpoint=checkpoint, force=force, argv=argv,
                             callbacks=callbacks,
                             label=f"[{i}/{len(plan)}] {name}/{run_cfg.name}")
        runs.append(run_cfg.run_dir)
        results.append({"data": name, "method": spec.token, "variant": spec.variant,
                        "seed": seed, "metrics": metrics, "run_dir": run_cfg.run_dir})
    rows = summarize_compare(results)
    bins = {r["metrics"].get("n_bins") for r in results}
    info["n_bins"] = bins.pop() if len(bins) == 1 else None  # None: the runs differ
    write_csv(out / "compare.csv", [_run_row(r) for r in results])
    write_csv(out / "compare_summary.csv", [
        r | {"seeds": " ".join(map(str, r["seeds"])), "target_accuracy_per_seed": " ".join(
            "" if v is None else repr(v) for v in r["target_accuracy_per_seed"])}
        for r in rows])
    best = {data: b["method"] for data, rs in _by_data(rows).items() if (b := _best(rs))}
    write_json(out / "compare.json", {"rows": rows, "best_on_target": best, "plan": info,
                                      "runs": [_run_row(r) for r in results]})
    markdown, text = format_markdown(rows, info), format_text(rows, info)
    atomic_write(out / "compare.md", markdown)
    atomic_write(out / "compare.txt", text)
    page = None
    if report:
        from sidda.report import write_report

        page = write_report(runs, out / "report.html", title=f"sidda compare: {out.name}",
                            evaluate="never", extra_html=_compare_html(rows, info))
    return CompareResult(out, runs, rows, markdown, text, page)


def _run_row(r: dict) -> dict:
    m = r["metrics"]
    row = {"data": r["data"], "method": r["method"], "loss_method": m.get("method"),
           "variant": r["variant"], "seed": r["seed"], "model": m.get("model"),
           "checkpoint": m.get("checkpoint"), "checkpoint_epoch": m.get("checkpoint_epoch")}
    row.update({f"{d}_{k}": _metric(m, d, k) for d, k in _RUN_METRICS})
    return row | {"run_dir": str(r["run_dir"])}
