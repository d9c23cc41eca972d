"""The text the command line prints: runs side by side, calibration, the label-free
diagnostics of a run, the standings of a sweep, the demo's gains, and the summary at the end
of training."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from sidda._text import DASH, fmt_cell
from sidda.cli.console import elapsed
from sidda.evaluate.standings import standings_tables, text_table
from sidda.experiments import DemoResult
from sidda.metrics.ranking import DEFAULT_VALIDATOR
from sidda.runs import RunDir

__all__ = ["calibration_lines", "demo_lines", "label_free_lines", "notes_lines", "run_table",
           "standings_lines", "train_summary"]

_COLUMNS = ("accuracy", "ece", "brier", "nll")
_cell = partial(fmt_cell, digits=3, missing=DASH)  # the label-free numbers


def run_table(reports: dict[str, dict]) -> str:
    """Source and target accuracy, ECE, Brier and NLL of several runs, side by side.

    >>> print(run_table({"r": {"method": "sidda", "source": {"accuracy": 0.5}}}))
    ... # doctest: +NORMALIZE_WHITESPACE
    run  method  sou_accuracy sou_ece sou_brier sou_nll tar_accuracy tar_ece tar_brier tar_nll
    ------------------------------------------------------------------------------------------...
    r    sidda   0.5000       -       -         -       -            -       -         -
    """
    head = f"{'run':<24}{'method':<13}" + "".join(
        f"{d[:3]}_{c:<9}" for d in ("source", "target") for c in _COLUMNS
    )
    lines = [head, "-" * len(head)]
    for name, rep in reports.items():
        cells = [fmt_cell(rep.get(dom, {}).get(c)).ljust(13)
                 for dom in ("source", "target") for c in _COLUMNS]
        lines.append(f"{name[:23]:<24}{rep.get('method', '?'):<13}" + "".join(cells).rstrip())
    return "\n".join(lines)


def calibration_lines(report: dict) -> str:
    """Temperature scaling, paper-compatible numbers and label-free selection, as text."""
    lines = []
    temp = (report.get("temperature") or {}).get("value")
    if temp is not None:
        lines.append(f"temperature T = {temp:.3f} (fitted on the source validation split)")
        for dom in ("source", "target"):
            d = report.get(dom, {})
            ts = d.get("temperature_scaled")
            if ts:
                lines.append(f"  {dom:<7} ECE {d['ece']:.4f} -> {ts['ece']:.4f}   Brier "
                             f"{d['brier']:.4f} -> {ts['brier']:.4f}   NLL {d['nll']:.4f} -> "
                             f"{ts['nll']:.4f}")
    for dom in ("source", "target"):
        pc = report.get(dom, {}).get("paper_compatible") or {}
        if "probe_ece" in pc:
            lines.append(f"paper-compatible {dom:<7} (LR probe, out of fold): accuracy "
                         f"{pc['probe_accuracy']:.4f}  ECE(paper) {pc['probe_ece']:.4f}  "
                         f"Brier/K {pc['probe_brier']:.4f}")
    rules = (report.get("selection") or {}).get("rules") or {}
    if rules:
        lines.append("label-free checkpoint selection (target accuracy of the pick; the "
                     "oracle reads target labels):")
        cells = [f"{k:<13} {fmt_cell(v.get('target_accuracy'))} ({v['checkpoint']})"
                 for k, v in rules.items()]
        lines += ["  " + "   ".join(c.ljust(36) for c in cells[i : i + 3]).rstrip()
                  for i in range(0, len(cells), 3)]
    return "\n".join(lines)


def demo_lines(result: DemoResult, *, checkpoint: str) -> str:
    """The demo's target accuracies: the baseline, then each SIDDA variant and its gain."""
    acc = result.target_accuracy()
    gains = ", ".join(f"SIDDA {v} {a:.4f} ({100 * (a - acc[0]):+.1f} points)"
                      for v, a in zip(("paper", "robust"), acc[1:], strict=True))
    return (f"target accuracy: source-only {acc[0]:.4f} -> {gains}; checkpoint "
            f"'{checkpoint}'; {result.seconds:.0f} s")


def collapse_lines(lf: Mapping) -> list[str]:
    """The collapse flag in words: one loud ``COLLAPSE?`` line per class it names."""
    col, frac = lf.get("collapse") or {}, lf.get("class_fractions") or {}
    if col.get("flag") is None:
        return ["collapse: unknown (" + "; ".join(col.get("reasons") or ["not computed"]) + ")"]
    if not col["flag"]:
        return ["collapse: not raised (no class over- or under-predicted on the target by the "
                "rule of docs/evaluation.md)"]
    lines = []
    for name in col.get("over_predicted", []):
        f = frac.get(name, {})
        lines.append(f"COLLAPSE? class {name!r} takes "
                     f"{_cell(f.get('target_predicted'), digits=2)} of the target (source share "
                     f"{_cell(f.get('source_labels'), digits=2)})")
    for name in col.get("missing", []):
        f = frac.get(name, {})
        lines.append(f"COLLAPSE? class {name!r} is never predicted on the target (source share "
                     f"{_cell(f.get('source_labels'), digits=2)})")
    return lines + ["  (a label shift between the domains can raise this too: look at the run "
                    "before trusting it)"]


def label_free_lines(report: Mapping, *, validator: str = DEFAULT_VALIDATOR) -> str:
    """The label-free block of ``sidda evaluate``: class fractions against the source balance,
    confidence and entropy, the collapse flag, domain distances and the validators."""
    lf = report.get("label_free")
    if not lf:
        return ("label-free diagnostics: not computed (see the notes)" if "label_free" in report
                else "")
    n = lf["n"]
    lines = [f"label-free diagnostics of the {n['target']} target test images (no target label "
             f"read), against {n['source']} source validation images:"]
    rows = [[name, _cell(f["target_predicted"]), _cell(f["source_labels"]),
             _cell(f["source_predicted"])]
            for name, f in lf["class_fractions"].items()]
    lines.append(text_table(["class", "predicted on target", "source training labels",
                             "predicted on source val"], rows))
    conf, ent = lf["mean_confidence"], lf["mean_entropy"]
    lines.append(f"  mean confidence: target {_cell(conf['target'])}, source "
                 f"{_cell(conf['source'])}; mean entropy (nats): target {_cell(ent['target'])}, "
                 f"source {_cell(ent['source'])}")
    lines += ["  " + line for line in collapse_lines(lf)]
    d = lf["domain_distance"]
    lines.append(f"  domain distance (source validation vs target latents): Sinkhorn (blur "
                 f"{d['blur']}) {_cell(d['sinkhorn_fixed_blur'])}, MMD² "
                 f"{_cell(d['mmd2'], digits=4)}, "
                 f"domain classifier balanced accuracy {_cell(d['domain_accuracy'])} (PAD "
                 f"{_cell(d['pad'])})")
    lines += [f"    {k} not computed: {why}" for k, why in d.get("skipped", {}).items()]
    lines.append(f"  label-free validators (higher is better; * {validator}, the default, "
                 "ranks runs without target labels):")
    cells = [f"{k}{'*' if k == validator else ''} {_cell(v)}" for k, v in lf["validators"].items()]
    lines += ["    " + "   ".join(cells[i:i + 5]) for i in range(0, len(cells), 5)]
    lines += [f"    {k} not computed: {why}" for k, why in lf["validators_skipped"].items()]
    return "\n".join(lines)


def notes_lines(report: Mapping) -> str:
    """The notes of an evaluation (what was left out, or read from another folder)."""
    return "\n".join(f"note: {n}" for n in report.get("notes") or [])


def standings_lines(standing: Mapping, *, what: str) -> str:
    """The ranking without target labels, or the validators' agreement, as text."""
    return "\n\n".join(f"{sentence}\n{text_table(h, rows)}"
                        for sentence, h, rows in standings_tables(standing, what=what))


def train_summary(run: RunDir, *, seconds: float, evaluated: bool = False) -> str:
    """What ``sidda train`` prints at the end: wall time, best epochs, checkpoints, the final
    validation numbers and the next command.

    The target numbers need no target labels: the distance between the domains' validation
    latents (``val_da``, the method's own; ``val_js_paper``, the paper's JS distance).
    """
    summary = run.summary() or {}
    epochs = {int(r["epoch"]): r for r in run.history().epochs if r.get("epoch") is not None}
    best = summary.get("best_epochs") or {}
    ran = summary.get("epochs_run", len(epochs))
    lines = [f"trained {run.path} in {elapsed(seconds)} ({ran} epochs"
             + (", stopped early" if summary.get("stopped_early") else "") + ")"]
    picks = []
    for name, key, what in (("best_val_acc", "val_acc_s", "validation accuracy"),
                            ("best_val_loss", "val_total", "validation loss")):
        if name in best:
            rec = epochs.get(int(best[name]), {})
            picks.append(f"epoch {best[name]} by {what} ({fmt_cell(rec.get(key))})")
    if picks:
        lines.append("  best: " + "; ".join(picks))
    names = run.checkpoints()
    lines.append("  checkpoints: " + (", ".join(
        f"{n} (epoch {best[n]})" if n in best else n for n in names) or "none")
        + f" in {run.path / 'checkpoints'}")
    last = summary.get("final") or {}
    if last:
        da = last.get("val_da")
        lines.append(f"  final validation: source accuracy {fmt_cell(last.get('val_acc_s'))}, CE "
                     f"{fmt_cell(last.get('val_ce'))}; target (no labels): distance to source "
                     + (f"val_da {da:.4g}, " if isinstance(da, int | float) else "")
                     + f"JS {fmt_cell(last.get('val_js_paper'))}")
    lines.append(("  next: " if evaluated else f"  next: sidda evaluate {run.path}   then: ")
                 + f"sidda report {run.path} --out {run.name}_report.html")
    return "\n".join(lines)
