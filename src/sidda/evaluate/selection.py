r"""Label-free checkpoint selection: which saved checkpoint to keep without target labels.

:func:`checkpoint_scores` computes, for one checkpoint, every score a rule of :data:`RULES`
reads: the training record's source validation numbers and every label-free validator of
:mod:`sidda.evaluate.validators` on the two validation sets. :func:`select_checkpoints` reports
what each rule picks among the saved checkpoints, next to the oracle that reads the target test
labels (a bound, not a rule), and the regret of each rule. docs/evaluation.md describes each
rule.
"""

from __future__ import annotations

import logging

from sidda import metrics
from sidda.evaluate.predict import Predictions
from sidda.evaluate.validators import (
    VALIDATORS,
    ValidatorInputs,
    validator_report,
)
from sidda.metrics.ranking import finite_number

__all__ = ["PICK_RULES", "RULES", "checkpoint_scores", "select_checkpoints"]

logger = logging.getLogger(__name__)

#: Label-free selection rules: name -> (score key in the candidate dict, "min" or "max"); a
#: dotted key ``validators.snd`` reads ``candidate["validators"]["snd"]``.
RULES: dict[str, tuple[str, str]] = {
    "best_val_acc": ("val_acc_s", "max"),
    "best_val_loss": ("val_total", "min"),
    **{name: (f"validators.{name}", "max") for name in VALIDATORS},
}
#: The rules that ``--checkpoint`` accepts by name, one per validator: the others share their
#: names with the saved checkpoints they choose during training (``best_val_acc``,
#: ``best_val_loss``).
PICK_RULES = tuple(VALIDATORS)


def checkpoint_scores(
    *,
    val_s: Predictions,
    val_t: Predictions,
    test_s: Predictions | None = None,
    test_t: Predictions | None = None,
    record: dict | None = None,
) -> dict:
    """Every number the selection rules need for one checkpoint (JSON-ready).

    Label-free scores: ``val_acc_s`` and ``val_total`` (from the training ``record``) and
    ``validators``, the score of every validator of :data:`~sidda.evaluate.validators.VALIDATORS`
    on the two validation sets (higher is better; None where one cannot be computed, with the
    reason in ``validators_skipped``). ``val_t.labels`` is never read. Reported, never used by
    a label-free rule: ``source_accuracy`` and ``target_accuracy`` on the test sets (the latter
    reads target labels, for the oracle).

    Args:
        val_s: The checkpoint's predictions on the labelled source validation images.
        val_t: Its predictions on the target validation images.
        test_s: Its predictions on the source test images, or None.
        test_t: Its predictions on the target test images, or None.
        record: The epoch record saved with the checkpoint (``epoch``, ``val_acc_s``,
            ``val_total``).
    """
    record = record or {}
    out: dict = {"epoch": record.get("epoch"), "val_acc_s": record.get("val_acc_s"),
                 "val_total": record.get("val_total")}
    report = validator_report(ValidatorInputs.from_predictions(val_s, val_t))
    out["validators"] = report["scores"]
    if report["skipped"]:
        out["validators_skipped"] = report["skipped"]
    for key, pred in (("source_accuracy", test_s), ("target_accuracy", test_t)):
        if pred is not None and pred.labels is not None:
            out[key] = float(metrics.accuracy(pred.logits, pred.labels))
    return out


def select_checkpoints(candidates: dict[str, dict]) -> dict:
    """What each label-free rule picks among saved checkpoints, and what the choice costs.

    Rules: ``final`` (the last epoch), ``best_val_acc`` / ``best_val_loss`` (source
    validation accuracy / validation CE + DA, as recorded in training), and one per validator
    of :data:`~sidda.evaluate.validators.VALIDATORS` (the highest score: for ``entropy``,
    ``iwv`` and ``dev``, the lowest entropy or risk). ``oracle`` picks the highest target test
    accuracy: it reads target labels and is a bound, not a rule. ``regret`` is the oracle's
    target accuracy minus the rule's. Ties go to the first candidate in ``candidates`` order.

    Args:
        candidates: checkpoint name -> :func:`checkpoint_scores` dict.

    Returns:
        ``{"candidates": candidates, "rules": {rule: {"checkpoint", "target_accuracy",
        "regret"}}}``; a rule whose score is missing for some checkpoint is left out.
    """
    def acc(name: str | None) -> float | None:
        return None if name is None else candidates[name].get("target_accuracy")

    def pick(key: str, mode: str) -> str | None:
        vals = {n: _value(c, key) for n, c in candidates.items()}
        if not vals or any(v is None for v in vals.values()):
            return None
        sign = 1 if mode == "min" else -1
        return min(vals, key=lambda n: sign * vals[n])  # min() keeps the first of ties

    chosen = {"final": "final" if "final" in candidates else None}
    chosen.update({rule: pick(key, mode) for rule, (key, mode) in RULES.items()})
    oracle = pick("target_accuracy", "max")
    rules: dict = {}
    for rule, name in chosen.items():
        if name is None:
            continue
        a, best = acc(name), acc(oracle)
        rules[rule] = {"checkpoint": name, "target_accuracy": a,
                       "regret": None if a is None or best is None else best - a}
    if oracle is not None:
        rules["oracle"] = {"checkpoint": oracle, "target_accuracy": acc(oracle), "regret": 0.0,
                           "note": "reads the target test labels: a bound, not a rule"}
    return {"candidates": candidates, "rules": rules}


def _value(candidate: dict, key: str) -> float | None:
    """``candidate[key]``, or ``candidate["a"]["b"]`` for the dotted key ``a.b``; None if
    missing or not a finite number."""
    value: object = candidate
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return finite_number(value)
