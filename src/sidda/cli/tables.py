"""The text the command line prints: runs side by side, calibration, the demo's gains, and
the summary at the end of training."""

from __future__ import annotations

from sidda._text import fmt_cell
from sidda.cli.console import elapsed
from sidda.experiments import DemoResult
from sidda.runs import RunDir

__all__ = ["calibration_lines", "demo_lines", "run_table", "train_summary"]

_COLUMNS = ("accuracy", "ece", "brier", "nll")


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


def _num(v: object, spec: str = ".4f") -> str:
    return "-" if not isinstance(v, int | float) else format(v, spec)


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
            picks.append(f"epoch {best[name]} by {what} ({_num(rec.get(key))})")
    if picks:
        lines.append("  best: " + "; ".join(picks))
    names = run.checkpoints()
    lines.append("  checkpoints: " + (", ".join(
        f"{n} (epoch {best[n]})" if n in best else n for n in names) or "none")
        + f" in {run.path / 'checkpoints'}")
    last = summary.get("final") or {}
    if last:
        da = last.get("val_da")
        lines.append(f"  final validation: source accuracy {_num(last.get('val_acc_s'))}, CE "
                     f"{_num(last.get('val_ce'))}; target (no labels): distance to source "
                     + (f"val_da {_num(da, '.4g')}, " if da is not None else "")
                     + f"JS {_num(last.get('val_js_paper'))}")
    lines.append(("  next: " if evaluated else f"  next: sidda evaluate {run.path}   then: ")
                 + f"sidda report {run.path} --out {run.path / 'report.html'}")
    return "\n".join(lines)
