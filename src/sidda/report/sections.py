"""The report's sections that read the evaluation: summary, calibration, checkpoint
selection, latent space (Isomap), and each run's own section (facts, reliability diagrams,
confusion matrices, classification reports, gallery, config, data manifest).

Every path shown is relative to the report's folder (``base``), the config and the manifest
included (:func:`~sidda.report.markup.relative_paths`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from sidda.evaluate import isomap_embedding
from sidda.plots import confusion_matrices, isomap_figure, reliability_diagram
from sidda.report.gallery import gallery_html
from sidda.report.loading import ReportRun
from sidda.report.markup import esc, fmt, img, pre, relative_path, relative_paths, table

__all__ = ["calibration_html", "isomap_html", "run_html", "selection_html", "summary_html"]


def summary_html(runs: list[ReportRun]) -> str:
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
    links = " &middot; ".join(f'<a href="#{esc(r.anchor)}">{esc(r.label)}</a>' for r in runs)
    return (
        "<h2 id='summary'>Summary</h2>"
        f"<p class='note'>Test-set metrics of each run's evaluated checkpoint, on the network's "
        f"own softmax. ECE: {runs[0].metrics.get('n_bins', 15)} equal-width bins; Brier: "
        "multiclass, summed over classes (range 0-2); NLL in nats. T: temperature fitted on "
        "the source validation split only.</p>"
        + table(head, rows, left=4) + f"<p>Runs: {links}</p>"
    )


def calibration_html(runs: list[ReportRun]) -> str:
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
        + table(head, rows, left=2)
        + table(["run", "T", "validation images", "val NLL before", "val NLL after", "note"],
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
        + table(p_head, p_rows, left=2)
    )


def selection_html(runs: list[ReportRun]) -> str:
    rules = ["final", "best_val_acc", "best_val_loss", "entropy", "iwv", "dev", "oracle"]
    head = ["run"] + [f"{r} {'(target labels)' if r == 'oracle' else ''}".strip()
                      for r in rules]
    rows = []
    for r in runs:
        sel = r.metrics.get("selection", {}).get("rules", {})
        rows.append([r.label] + [
            "" if sel.get(rule) is None else
            f"{fmt(sel[rule].get('target_accuracy'))} ({sel[rule].get('checkpoint')})"
            for rule in rules
        ])
    body = table(head, rows)
    detail = []
    for r in runs:
        cands = r.metrics.get("selection", {}).get("candidates", {})
        if not cands:
            continue
        keys, scored = ["epoch", "val_acc_s", "val_total"], ["entropy", "iwv", "dev"]
        accs = ["source_accuracy", "target_accuracy"]
        detail.append(f"<h4>{esc(r.label)}</h4>" + table(
            ["checkpoint", *keys, *(f"validator {v}" for v in scored), *accs],
            [[n, *(c.get(k) for k in keys),
              *((c.get("validators") if isinstance(c.get("validators"), dict) else {}).get(v)
                for v in scored), *(c.get(k) for k in accs)] for n, c in cands.items()]))
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
        "usable rule, it shows what the choice costs. The validators' scores of every "
        "checkpoint are signed so that higher is better (minus the entropy or risk).</p>"
        + body + "<details><summary>Scores of every checkpoint</summary>"
        + "".join(detail) + "</details>"
    )


def isomap_html(runs: list[ReportRun], *, n_points: int) -> str:
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
        + img(isomap_figure(panels, class_names=names), "Isomap of source and target latents")
    )


def _config_text(r: ReportRun, base: Path) -> str:
    """``config.yaml`` with its paths relative to ``base`` (as written when it does not parse)."""
    cfg = r.config_dict
    if cfg is None:
        return r.config
    return yaml.safe_dump(relative_paths(cfg, base), sort_keys=False, allow_unicode=True)


def run_html(r: ReportRun, *, base: Path, rgb: Sequence[int] | None = None,
             stretch: str = "linear", per_side: int = 6) -> str:
    """One run's section; paths relative to ``base``, the gallery drawn with ``rgb``,
    ``stretch``, ``per_side`` (:func:`~sidda.report.gallery.gallery_html`)."""
    m = r.metrics
    parts = [f"<h2 id='{esc(r.anchor)}'>Run {esc(r.label)}</h2>",
             f"<p class='note'>Directory: {esc(relative_path(r.dir.path, base))}</p>"]
    facts = [["method", m.get("method")], ["model", m.get("model")],
             ["evaluated checkpoint", f"{m.get('checkpoint')} (epoch {m.get('checkpoint_epoch')})"],
             ["test data", relative_path(r.data_path, base)],
             ["split sizes", json.dumps(r.info.sizes)],
             ["epochs run", r.summary.get("epochs_run")],
             ["best epochs", json.dumps(r.summary.get("best_epochs", {}))],
             ["training seconds", r.summary.get("seconds")]]
    parts.append(table(None, facts, left=2))
    parts.append(gallery_html(r, base=base, rgb=rgb, stretch=stretch, per_side=per_side))
    temp = (m.get("temperature") or {}).get("value")
    domains = {}
    for dom in ("source", "target"):
        logits, labels = r.array("logits", dom), r.array("labels", dom)
        if logits is not None and labels is not None:
            domains[dom] = (logits, labels)
    if domains:
        parts.append("<h3>Reliability diagrams</h3>"
                     + img(reliability_diagram(domains, n_bins=m.get("n_bins", 15),
                                               temperature=temp),
                           f"reliability diagrams of {r.label}"))
    cms = {d: m[d]["confusion_matrix"] for d in ("source", "target")
           if "confusion_matrix" in m.get(d, {})}
    if cms:
        parts.append("<h3>Confusion matrices (row-normalised; counts in brackets)</h3>"
                     + img(confusion_matrices(cms, class_names=r.class_names),
                           f"confusion matrices of {r.label}"))
    for dom in ("source", "target"):
        rep = m.get(dom, {}).get("report")
        if not rep:
            continue
        rows = [[k, v["precision"], v["recall"], v["f1-score"], v["support"]]
                for k, v in rep.items() if isinstance(v, dict)]
        parts.append(f"<h3>Classification report, {dom} (accuracy "
                     f"{esc(fmt(rep.get('accuracy')))})</h3>"
                     + table(["class", "precision", "recall", "F1", "support"], rows))
    parts.append("<details><summary>Config (config.yaml; paths relative to this page)</summary>"
                 + pre(_config_text(r, base)) + "</details>")
    parts.append("<details><summary>Data manifest (data_manifest.json)</summary>"
                 + pre(json.dumps(relative_paths(r.manifest, base), indent=2)) + "</details>")
    return "".join(parts)
