"""One self-contained HTML page about one or several evaluated runs.

:func:`write_report` reads each run directory through :class:`~sidda.runs.RunDir` (its config,
data manifest, metrics, prediction arrays and history) and writes one HTML file. It renders
only: the runs are evaluated first (:func:`sidda.experiments.evaluate_runs`, as ``sidda report``
does), and a run without a complete evaluation is an error. Every figure is a base64-embedded PNG
and every piece of text is HTML-escaped, so the page needs no other file and shows a run name
like ``<b>`` as text.

Sections: summary table; calibration (standard, temperature-scaled, paper-compatible);
label-free checkpoint selection; latent space (Isomap, the paper's Figure 4); then, per run,
the config, the data manifest, per-class reports, reliability diagrams, confusion matrices
and training curves.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sidda._text import fmt_cell
from sidda._version import __version__
from sidda.errors import InputError, short_repr
from sidda.evaluate import isomap_embedding
from sidda.plots import confusion_matrices, isomap_figure, reliability_diagram, training_curves
from sidda.runs import History, RunDir, RunInfo, RunState, atomic_write

__all__ = ["ISOMAP_POINTS", "build_report", "check_isomap_points", "figure_to_data_uri",
           "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1400px;padding:0 1rem;color:#222;line-height:1.4}
h1{border-bottom:2px solid #4c72b0}h2{margin-top:2.2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f0f3f8}td.l,th.l{text-align:left}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem;max-height:28rem}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}
.note{color:#555;font-size:.88rem;max-width:60rem}
details{margin:.5rem 0}summary{cursor:pointer;font-weight:600}
"""


def figure_to_data_uri(fig: Any, *, dpi: int = 90) -> str:
    """PNG bytes of a matplotlib Figure as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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


# --------------------------------------------------------------------------- html helpers


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: object) -> str:
    return fmt_cell(v, missing="\u2013")


def _table(head: Sequence[str] | None, rows: Sequence[Sequence[object]], *, left: int = 1) -> str:
    def cell(tag: str, i: int, v: object) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{_e(_fmt(v))}</{tag}>"

    out = ["<table>"]
    if head:
        out += ["<thead><tr>", *(cell("th", i, h) for i, h in enumerate(head)), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        out += ["<tr>", *(cell("td", i, v) for i, v in enumerate(row)), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def _img(fig: Any, alt: str) -> str:
    return f'<img src="{figure_to_data_uri(fig)}" alt="{_e(alt)}">'


def _pre(text: str) -> str:
    return f"<pre>{_e(text)}</pre>"


# --------------------------------------------------------------------------- loading


class _Run(NamedTuple):
    """One run on the page: what :class:`~sidda.runs.RunDir` read from it, once."""

    dir: RunDir
    label: str
    metrics: dict
    info: RunInfo
    summary: dict
    manifest: dict
    config: str  #: the text of config.yaml
    history: History

    @classmethod
    def read(cls, run: RunDir, label: str) -> _Run:
        return cls(run, label, run.metrics() or {}, run.info(), run.summary() or {},
                   run.manifest(), run.config_text(), run.history())

    @property
    def anchor(self) -> str:
        return "run-" + "".join(c if c.isalnum() else "-" for c in self.label)

    @property
    def class_names(self) -> Sequence[str] | None:
        return self.info.class_names or self.manifest.get("class_names")

    def array(self, kind: str, domain: str) -> np.ndarray | None:
        return self.dir.array(kind, domain)


def _labels(runs: Sequence[RunDir]) -> list[str]:
    """Run names, made unique with their parent folder where two runs share a name."""
    names = [r.name for r in runs]
    return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name
            for r in runs]


# --------------------------------------------------------------------------- sections


def _summary(runs: list[_Run]) -> str:
    head = ["run", "method", "model", "checkpoint (epoch)", "source acc", "target acc",
            "source ECE", "target ECE", "target ECE (T)", "source Brier", "target Brier",
            "target NLL", "T"]
    rows = []
    for r in runs:
        m = r.metrics
        s, t = m.get("source", {}), m.get("target", {})
        rows.append([
            r.label, m.get("method"), m.get("model"),
            f"{m.get('checkpoint')} ({m.get('checkpoint_epoch')})",
            s.get("accuracy"), t.get("accuracy"), s.get("ece"), t.get("ece"),
            t.get("temperature_scaled", {}).get("ece"), s.get("brier"), t.get("brier"),
            t.get("nll"), (m.get("temperature") or {}).get("value"),
        ])
    links = " &middot; ".join(f'<a href="#{_e(r.anchor)}">{_e(r.label)}</a>' for r in runs)
    return (
        "<h2 id='summary'>Summary</h2>"
        f"<p class='note'>Test-set metrics of each run's evaluated checkpoint, on the network's "
        f"own softmax. ECE: {runs[0].metrics.get('n_bins', 15)} equal-width bins; Brier: "
        "multiclass, summed over classes (range 0-2); NLL in nats. T: temperature fitted on "
        "the source validation split only.</p>"
        + _table(head, rows, left=4) + f"<p>Runs: {links}</p>"
    )


def _calibration(runs: list[_Run]) -> str:
    head = ["run", "domain", "n", "accuracy", "ECE", "ECE (T)", "Brier", "Brier (T)", "NLL",
            "NLL (T)"]
    rows = []
    for r in runs:
        for dom in ("source", "target"):
            d = r.metrics.get(dom, {})
            ts = d.get("temperature_scaled", {})
            rows.append([r.label, dom, d.get("n"), d.get("accuracy"), d.get("ece"),
                         ts.get("ece"), d.get("brier"), ts.get("brier"), d.get("nll"),
                         ts.get("nll")])
    p_head = ["run", "domain", "probe accuracy", "probe ECE (paper)", "probe Brier/K (paper)",
              "network ECE (paper formula)", "network Brier/K", "note"]
    p_rows = []
    for r in runs:
        for dom in ("source", "target"):
            pc = r.metrics.get(dom, {}).get("paper_compatible", {})
            p_rows.append([r.label, dom, pc.get("probe_accuracy"), pc.get("probe_ece"),
                           pc.get("probe_brier"), pc.get("network_ece"),
                           pc.get("network_brier"),
                           pc.get("probe_error") or pc.get("reason") or ""])
    temps = []
    for r in runs:
        t = r.metrics.get("temperature") or {}
        temps.append([r.label, t.get("value"), t.get("n"), t.get("val_nll_before"),
                      t.get("val_nll_after"), t.get("warning") or t.get("reason") or ""])
    return (
        "<h2 id='calibration'>Calibration</h2>"
        "<h3>Standard, before and after temperature scaling</h3>"
        "<p class='note'>(T): softmax(logits / T) with T fitted by minimising the NLL on the "
        "<b>source validation split</b> (the run's own held-out split, rebuilt from its seed). "
        "No target label is read by the fit; target numbers use the target test labels only "
        "to score.</p>"
        + _table(head, rows, left=2)
        + _table(["run", "T", "validation images", "val NLL before", "val NLL after", "note"],
                 temps)
        + "<h3>Paper-compatible (the authors' calibration protocol; docs/evaluation.md)"
        " &mdash; not the standard metrics</h3>"
        "<p class='note'>The authors' protocol: a logistic-regression probe on the 256-d "
        "latents with sigmoid calibration, scored with their per-sample &ldquo;ECE&rdquo; "
        "(mean |confidence &minus; correct|, an upper bound of the binned ECE) and the Brier "
        "score divided by K. The probe is fitted with the labels of the domain it scores "
        "(target labels for the target), so it measures the latents, not the network. Unlike "
        "the authors' in-sample fit, each image is scored by a probe fitted on the other "
        "folds (5-fold, out of fold). The last two columns apply the paper's formulas to the "
        "network's own softmax.</p>"
        + _table(p_head, p_rows, left=2)
    )


def _selection(runs: list[_Run]) -> str:
    rules = ["final", "best_val_acc", "best_val_loss", "entropy", "iwv", "dev", "oracle"]
    head = ["run"] + [f"{r} {'(target labels)' if r == 'oracle' else ''}".strip()
                      for r in rules]
    rows = []
    for r in runs:
        sel = r.metrics.get("selection", {}).get("rules", {})
        rows.append([r.label] + [
            "" if sel.get(rule) is None else
            f"{_fmt(sel[rule].get('target_accuracy'))} ({sel[rule].get('checkpoint')})"
            for rule in rules
        ])
    body = _table(head, rows)
    detail = []
    for r in runs:
        cands = r.metrics.get("selection", {}).get("candidates", {})
        if not cands:
            continue
        keys = ["epoch", "val_acc_s", "val_total", "target_val_entropy", "iwv_risk",
                "dev_risk", "source_accuracy", "target_accuracy"]
        detail.append(f"<h4>{_e(r.label)}</h4>" + _table(
            ["checkpoint", *keys], [[n, *(c.get(k) for k in keys)] for n, c in cands.items()]))
    return (
        "<h2 id='selection'>Label-free checkpoint selection</h2>"
        "<p class='note'>Target test accuracy of the checkpoint that each rule picks among the "
        "saved ones (final, best_val_acc, best_val_loss); the picked checkpoint is in "
        "brackets. No rule but the oracle reads a target label. <b>final</b>: last epoch; "
        "<b>best_val_acc</b>: highest source validation accuracy; <b>best_val_loss</b>: lowest "
        "validation CE + DA; <b>entropy</b>: lowest mean prediction entropy on the unlabelled "
        "target validation images; <b>iwv</b>: lowest importance-weighted source validation "
        "CE, weights from a domain classifier on the latents (Sugiyama et al. 2007); "
        "<b>dev</b>: the same with the control variate of deep embedded validation (You et "
        "al. 2019). <b>oracle</b>: the best checkpoint by target test labels &mdash; not a "
        "usable rule, it shows what the choice costs.</p>"
        + body + "<details><summary>Scores of every checkpoint</summary>"
        + "".join(detail) + "</details>"
    )


def _isomap(runs: list[_Run], *, n_points: int) -> str:
    panels = {}
    for r in runs:
        z_s, z_t = r.array("latents", "source"), r.array("latents", "target")
        l_s, l_t = r.array("logits", "source"), r.array("logits", "target")
        if any(a is None for a in (z_s, z_t, l_s, l_t)):
            continue
        panels[r.label] = isomap_embedding(z_s, z_t, l_s.argmax(1), l_t.argmax(1),
                                           n_points=n_points)
    if not panels:
        return ""
    names = next((r.class_names for r in runs if r.class_names), None)
    return (
        "<h2 id='isomap'>Latent space (Isomap)</h2>"
        f"<p class='note'>The paper's Figure 4: one Isomap (2-d, 5 neighbours, more when the "
        "neighbour graph would fall apart: k in each panel) fitted on the "
        f"union of up to {n_points} source and {n_points} target test latents per run, "
        "coloured by predicted class. Filled upward triangles: source; hollow downward "
        "triangles: target. When SIDDA aligns the domains, target points of a class sit on "
        "the source cluster of that class.</p>"
        + _img(isomap_figure(panels, class_names=names), "Isomap of source and target latents")
    )


def _run_section(r: _Run) -> str:
    m = r.metrics
    parts = [f"<h2 id='{_e(r.anchor)}'>Run {_e(r.label)}</h2>",
             f"<p class='note'>Directory: {_e(r.dir.path.resolve())}</p>"]
    facts = [["method", m.get("method")], ["model", m.get("model")],
             ["evaluated checkpoint", f"{m.get('checkpoint')} (epoch {m.get('checkpoint_epoch')})"],
             ["test data", m.get("data_path")],
             ["split sizes", json.dumps(r.info.sizes)],
             ["epochs run", r.summary.get("epochs_run")],
             ["best epochs", json.dumps(r.summary.get("best_epochs", {}))],
             ["training seconds", r.summary.get("seconds")]]
    parts.append(_table(None, facts, left=2))
    temp = (m.get("temperature") or {}).get("value")
    domains = {}
    for dom in ("source", "target"):
        logits, labels = r.array("logits", dom), r.array("labels", dom)
        if logits is not None and labels is not None:
            domains[dom] = (logits, labels)
    if domains:
        parts.append("<h3>Reliability diagrams</h3>"
                     + _img(reliability_diagram(domains, n_bins=m.get("n_bins", 15),
                                                temperature=temp),
                            f"reliability diagrams of {r.label}"))
    cms = {d: m[d]["confusion_matrix"] for d in ("source", "target")
           if "confusion_matrix" in m.get(d, {})}
    if cms:
        parts.append("<h3>Confusion matrices (row-normalised; counts in brackets)</h3>"
                     + _img(confusion_matrices(cms, class_names=r.class_names),
                            f"confusion matrices of {r.label}"))
    if r.history.epochs:
        parts.append("<h3>Training curves</h3>"
                     + _img(training_curves(r.history.epochs, r.history.steps),
                            f"training curves of {r.label}"))
    for dom in ("source", "target"):
        rep = m.get(dom, {}).get("report")
        if not rep:
            continue
        rows = [[k, v["precision"], v["recall"], v["f1-score"], v["support"]]
                for k, v in rep.items() if isinstance(v, dict)]
        parts.append(f"<h3>Classification report, {dom} (accuracy "
                     f"{_e(_fmt(rep.get('accuracy')))})</h3>"
                     + _table(["class", "precision", "recall", "F1", "support"], rows))
    parts.append("<details><summary>Config (config.yaml)</summary>" + _pre(r.config)
                 + "</details>")
    parts.append("<details><summary>Data manifest (data_manifest.json)</summary>"
                 + _pre(json.dumps(r.manifest, indent=2)) + "</details>")
    return "".join(parts)


# --------------------------------------------------------------------------- entry points


def build_report(
    run_dirs: Sequence[RunDir | str | Path],
    *,
    title: str | None = None,
    isomap_points: int = 600,
    extra_html: str = "",
) -> str:
    """The HTML text of the report for evaluated run directories.

    Args:
        run_dirs: Run directories with a complete evaluation (``sidda evaluate``).
        title: Page title.
        isomap_points: Points per domain in the Isomap.
        extra_html: Trusted HTML inserted after the summary (used by ``sidda sweep``).

    Raises:
        FileNotFoundError: a run is not evaluated; DamagedFileError: a run file does not read.
    """
    if not run_dirs:
        raise ValueError("build_report needs at least one run directory")
    check_isomap_points(isomap_points)
    dirs = [RunDir.of(p) for p in run_dirs]
    for run in dirs:  # every run before reading any
        run.require(RunState.EVALUATED)
    runs = [_Run.read(run, label) for run, label in zip(dirs, _labels(dirs), strict=True)]
    title = title or ("sidda report: " + ", ".join(r.label for r in runs))
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    nav = " &middot; ".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("summary", "Summary"), ("calibration", "Calibration"),
        ("selection", "Checkpoint selection"), ("isomap", "Latent space")))
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='note'>Generated {_e(stamp)} by sidda {_e(__version__)}. {nav}</p>",
        _summary(runs), extra_html, _calibration(runs), _selection(runs),
        _isomap(runs, n_points=isomap_points),
        *(_run_section(r) for r in runs),
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(
    run_dirs: Sequence[RunDir | str | Path],
    out: str | Path,
    *,
    title: str | None = None,
    isomap_points: int = 600,
    extra_html: str = "",
) -> Path:
    """Write the report of evaluated runs (:func:`build_report`) to ``out``, atomically.

    Args:
        run_dirs: Run directories with a complete evaluation
            (:func:`sidda.experiments.evaluate_runs` makes them so).
        out: The HTML file to write.
        title: Page title.
        isomap_points: Points per domain in the Isomap.
        extra_html: Trusted HTML inserted after the summary.
    """
    check_isomap_points(isomap_points)
    text = build_report(run_dirs, title=title, isomap_points=isomap_points,
                        extra_html=extra_html)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, text)
