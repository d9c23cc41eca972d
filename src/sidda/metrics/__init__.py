r"""Classification and calibration metrics, functional and tensor-in (pure torch and NumPy).

Shapes used throughout: ``N`` samples, ``K`` classes, ``D`` latent features.

* ``probs`` (N, K): class probabilities, each row on the simplex (``softmax(logits, dim=1)``).
* ``logits`` / ``scores`` (N, K): unnormalised scores; only their argmax matters for accuracy.
* ``labels`` (N,): integer class indices in ``0..K-1``.

Every function also accepts NumPy arrays (converted with :func:`torch.as_tensor`) and returns
0-d tensors, a ``NamedTuple`` or, for reports, plain Python objects. Scalars come back in the
floating dtype of the input (``probs`` or ``logits``) but are accumulated in float64.

* :mod:`~sidda.metrics.classification` - :func:`accuracy`, :func:`confusion_matrix`,
  :func:`classification_report`;
* :mod:`~sidda.metrics.calibration` - two families of calibration numbers (see
  docs/evaluation.md, "The paper-compatible numbers"): **standard**
  (:func:`expected_calibration_error`, equal-width binned; :func:`brier_score`, multiclass;
  :func:`negative_log_likelihood`; :func:`reliability_bins`), to report for the network, and
  **paper-compatible** (:func:`paper_ece`, :func:`paper_brier`), the SIDDA authors'
  definitions, to compare with the paper;
* :mod:`~sidda.metrics.temperature` - temperature scaling: :func:`fit_temperature` on
  *source validation* logits, :func:`apply_temperature`, :func:`temperature_nll`;
* :mod:`~sidda.metrics.ranking` - how far a label-free validator can be trusted over runs:
  :func:`weighted_spearman` (Musgrave et al., 2022), :func:`spearman`, :func:`regret`,
  :func:`validator_agreement`, :func:`rank_runs`, :data:`DEFAULT_VALIDATOR`;
* :mod:`~sidda.metrics.validation` - the argument checks they share.

The authors' logistic-regression probe (sklearn) is in :mod:`sidda.evaluate.calibration`
(``paper_probe_calibration``), which composes these functions.
"""

from sidda.metrics.calibration import (
    MAX_BINS,
    ReliabilityBins,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    paper_brier,
    paper_ece,
    reliability_bins,
)
from sidda.metrics.classification import accuracy, classification_report, confusion_matrix
from sidda.metrics.ranking import (
    DEFAULT_VALIDATOR,
    rank_runs,
    regret,
    spearman,
    validator_agreement,
    weighted_spearman,
)
from sidda.metrics.temperature import apply_temperature, fit_temperature, temperature_nll

__all__ = [
    "DEFAULT_VALIDATOR",
    "MAX_BINS",
    "ReliabilityBins",
    "accuracy",
    "apply_temperature",
    "brier_score",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "paper_brier",
    "paper_ece",
    "rank_runs",
    "regret",
    "reliability_bins",
    "spearman",
    "temperature_nll",
    "validator_agreement",
    "weighted_spearman",
]
