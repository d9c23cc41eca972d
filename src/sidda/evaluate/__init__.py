r"""Evaluate a trained run: predictions, test metrics, calibration, label-free selection.

:func:`sidda.experiments.evaluate_run` composes the pieces and writes ``metrics.json``
(``docs/evaluation.md`` documents its layout). Three kinds of numbers, kept apart
(docs/evaluation.md explains each):

* **The network's own calibration** on its softmax: equal-width binned ECE, multiclass Brier
  :math:`\frac1N\sum_i\sum_k(p_{ik}-1[y_i=k])^2` and NLL. Then the same after temperature
  scaling, with :math:`T` fitted on the **source validation split only**; no target label is
  read (:mod:`~sidda.evaluate.calibration`).
* **Paper-compatible** numbers: the authors' logistic-regression probe on the latents,
  cross-fitted (:func:`paper_compatible`); a comparison with the paper, not a result.
* **Label-free checkpoint selection**: what each rule that reads no target label would pick
  among the saved checkpoints, next to the oracle that reads the target test labels
  (:mod:`~sidda.evaluate.selection`), with the label-free validators of
  :mod:`~sidda.evaluate.validators` (SND, IM, BNM, ClassAMI, IWV, DEV, ...);
* **Label-free diagnostics** of one run: predicted class balance against the source's,
  confidence, a collapse flag, domain distances and the validators
  (:mod:`~sidda.evaluate.diagnostics`); several runs side by side, ranked by a validator with
  collapsed runs last, or each validator's agreement with target accuracy
  (:mod:`~sidda.evaluate.standings`).

Modules: :mod:`~sidda.evaluate.predict` (the forward pass, :class:`Predictions`, predictions
of new images), :mod:`~sidda.evaluate.calibration`, :mod:`~sidda.evaluate.selection`,
:mod:`~sidda.evaluate.validators`, :mod:`~sidda.evaluate.importance` (the domain classifier
of IWV, DEV and the proxy A-distance), :mod:`~sidda.evaluate.diagnostics`,
:mod:`~sidda.evaluate.embedding` (Isomap of the latents), :mod:`~sidda.evaluate.curves`
(training curves over seeds). The metric formulas are in :mod:`sidda.metrics`. This package
computes and never touches a run directory: :mod:`sidda.experiments.evaluation` reads and
writes the files.
"""

from sidda.evaluate.calibration import (
    MAX_BINS,
    ProbeResult,
    check_bins,
    fit_source_temperature,
    paper_compatible,
    paper_probe_calibration,
    temperature_metrics,
)
from sidda.evaluate.curves import CurveStats, distance_curves, group_curves, mean_std
from sidda.evaluate.diagnostics import collapse_check, domain_distances, label_free_diagnostics
from sidda.evaluate.embedding import IsomapEmbedding, isomap_embedding
from sidda.evaluate.importance import (
    DomainFit,
    RiskEstimate,
    domain_classifier,
    domain_weights,
    importance_weighted_risk,
)
from sidda.evaluate.label_free import prediction_entropy
from sidda.evaluate.predict import (
    Predictions,
    domain_metrics,
    forward_all,
    predict,
    predict_arrays,
)
from sidda.evaluate.selection import PICK_RULES, RULES, checkpoint_scores, select_checkpoints
from sidda.evaluate.validators import (
    VALIDATORS,
    Validator,
    ValidatorInputs,
    validator_report,
    validator_scores,
)

__all__ = [
    "MAX_BINS",
    "PICK_RULES",
    "RULES",
    "VALIDATORS",
    "CurveStats",
    "DomainFit",
    "IsomapEmbedding",
    "Predictions",
    "ProbeResult",
    "RiskEstimate",
    "Validator",
    "ValidatorInputs",
    "check_bins",
    "checkpoint_scores",
    "collapse_check",
    "distance_curves",
    "domain_classifier",
    "domain_distances",
    "domain_metrics",
    "domain_weights",
    "fit_source_temperature",
    "forward_all",
    "group_curves",
    "importance_weighted_risk",
    "isomap_embedding",
    "label_free_diagnostics",
    "mean_std",
    "paper_compatible",
    "paper_probe_calibration",
    "predict",
    "predict_arrays",
    "prediction_entropy",
    "select_checkpoints",
    "temperature_metrics",
    "validator_report",
    "validator_scores",
]
