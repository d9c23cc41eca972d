r"""Label-free checkpoint selection: which saved checkpoint to keep without target labels.

:func:`checkpoint_scores` computes, for one checkpoint, every score a rule of :data:`RULES`
reads; :func:`select_checkpoints` reports what each rule picks among the saved checkpoints,
next to the oracle that reads the target test labels (a bound, not a rule), and the regret of
each rule. The importance-weighted rules estimate the target risk from labelled source
validation samples with density ratios :math:`w(z) = p_t(z)/p_s(z)` of the latents
(:func:`domain_weights`): IWV (Sugiyama et al., 2007) and DEV (You et al., 2019),
:func:`importance_weighted_risk`. docs/evaluation.md describes each rule.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from sidda import metrics
from sidda.evaluate.predict import Predictions
from sidda.evaluate.threads import single_blas_thread

__all__ = [
    "PICK_RULES",
    "RULES",
    "RiskEstimate",
    "checkpoint_scores",
    "domain_weights",
    "importance_weighted_risk",
    "prediction_entropy",
    "select_checkpoints",
]

logger = logging.getLogger(__name__)

#: Label-free selection rules: name -> (score key in the candidate dict, "min" or "max").
RULES: dict[str, tuple[str, str]] = {
    "best_val_acc": ("val_acc_s", "max"),
    "best_val_loss": ("val_total", "min"),
    "entropy": ("target_val_entropy", "min"),
    "iwv": ("iwv_risk", "min"),
    "dev": ("dev_risk", "min"),
}
#: The rules that ``--checkpoint`` accepts by name: the others share their names with the saved
#: checkpoints they choose during training (``best_val_acc``, ``best_val_loss``).
PICK_RULES = ("entropy", "iwv", "dev")


class RiskEstimate(NamedTuple):
    """Importance-weighted estimates of the target risk from labelled source samples."""

    iwv: float  #: mean_i w_i l_i (Sugiyama et al., 2007)
    dev: float  #: with the control variate of You et al. (2019), "deep embedded validation"


def prediction_entropy(logits: Tensor) -> Tensor:
    r"""Per-sample entropy :math:`H_i = -\sum_k p_{ik}\log p_{ik}` (nats) of softmax(logits).

    >>> prediction_entropy(torch.zeros(1, 4))  # uniform over 4 classes: log 4
    tensor([1.3863])
    """
    logp = torch.log_softmax(logits.double(), dim=1)  # (N, K)
    return -(logp.exp() * logp).sum(1).to(logits.dtype)


def domain_weights(
    latents_s: Tensor, latents_t: Tensor, *, n_splits: int = 5, random_state: int = 0
) -> np.ndarray:
    r"""Density-ratio weights :math:`w(z) = p_t(z)/p_s(z)` for the source samples.

    A logistic-regression domain classifier (target = 1) on standardised latents gives
    :math:`w_i = \frac{n_s}{n_t}\frac{P(t|z_i)}{P(s|z_i)}`. Each source sample's probability
    comes from a classifier fitted on the other folds (cross-fitting), so a sample is never
    weighted by a model that saw it. Probabilities are clipped to [1e-3, 1 - 1e-3].

    Args:
        latents_s: (N_s, D) source-validation latents.
        latents_t: (N_t, D) target latents (no labels).
        n_splits: folds, lowered to the size of the smaller domain; at least 2 per domain.

    Returns:
        (N_s,) float64 weights.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z = torch.cat([latents_s, latents_t]).double().numpy()  # (N_s + N_t, D)
    n_s, n_t = len(latents_s), len(latents_t)
    k = min(n_splits, n_s, n_t)
    if k < 2:
        raise ValueError(
            f"domain_weights needs >= 2 source and >= 2 target samples, got {n_s} and {n_t}"
        )
    d = np.r_[np.zeros(n_s, int), np.ones(n_t, int)]
    p_t = np.zeros(len(z))
    folds = StratifiedKFold(k, shuffle=True, random_state=random_state)
    with single_blas_thread():
        for train, test in folds.split(z, d):
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            clf.fit(z[train], d[train])
            p_t[test] = clf.predict_proba(z[test])[:, 1]
    p = np.clip(p_t[:n_s], 1e-3, 1 - 1e-3)
    return (n_s / n_t) * p / (1 - p)


def importance_weighted_risk(losses: np.ndarray, weights: np.ndarray) -> RiskEstimate:
    r"""Importance-weighted validation risk, plain and with DEV's control variate.

    .. math::
        \hat R_{\mathrm{IWV}} = \overline{w\ell}, \qquad
        \hat R_{\mathrm{DEV}} = \overline{w\ell} + \eta\,\overline{w} - \eta, \quad
        \eta = -\frac{\mathrm{Cov}(w\ell, w)}{\mathrm{Var}(w)}

    (:math:`E[w] = 1` under the source, so the control variate adds no bias; :math:`\eta = 0`
    when the weights are constant).

    Args:
        losses: (N,) per-sample losses of labelled source-validation samples.
        weights: (N,) density ratios from :func:`domain_weights`.

    >>> importance_weighted_risk(np.array([1.0, 3.0]), np.ones(2))
    RiskEstimate(iwv=2.0, dev=2.0)
    """
    losses, weights = np.asarray(losses, float), np.asarray(weights, float)
    wl = weights * losses
    var = weights.var(ddof=1) if len(weights) > 1 else 0.0
    eta = 0.0 if var <= 1e-12 else -np.cov(wl, weights, ddof=1)[0, 1] / var
    return RiskEstimate(float(wl.mean()), float(wl.mean() + eta * weights.mean() - eta))


def checkpoint_scores(
    *,
    val_s: Predictions,
    val_t: Predictions,
    test_s: Predictions | None = None,
    test_t: Predictions | None = None,
    record: dict | None = None,
) -> dict:
    """Every number the selection rules need for one checkpoint (JSON-ready).

    Label-free scores: ``val_acc_s`` and ``val_total`` (from the training ``record``),
    ``target_val_entropy`` (mean prediction entropy on the target validation images),
    ``iwv_risk`` and ``dev_risk`` (importance-weighted source-validation cross-entropy,
    :func:`domain_weights` from the two validation latent sets). ``val_t.labels`` is never
    read. Reported, never used by a label-free rule: ``source_accuracy`` and
    ``target_accuracy`` on the test sets (the latter reads target labels, for the oracle).

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
    out["target_val_entropy"] = float(prediction_entropy(val_t.logits).mean())
    if val_s.labels is not None:
        losses = F.cross_entropy(val_s.logits.double(), val_s.labels, reduction="none").numpy()
        try:
            est = importance_weighted_risk(losses, domain_weights(val_s.latents, val_t.latents))
            out.update(iwv_risk=est.iwv, dev_risk=est.dev)
        except ValueError as e:
            logger.warning("importance-weighted validation skipped: %s", e)
    for key, pred in (("source_accuracy", test_s), ("target_accuracy", test_t)):
        if pred is not None and pred.labels is not None:
            out[key] = float(metrics.accuracy(pred.logits, pred.labels))
    return out


def select_checkpoints(candidates: dict[str, dict]) -> dict:
    """What each label-free rule picks among saved checkpoints, and what the choice costs.

    Rules: ``final`` (the last epoch), ``best_val_acc`` / ``best_val_loss`` (source
    validation accuracy / validation CE + DA, as recorded in training), ``entropy`` (lowest
    mean target prediction entropy), ``iwv`` and ``dev`` (lowest importance-weighted source
    validation risk). ``oracle`` picks the highest target test accuracy: it reads target
    labels and is a bound, not a rule. ``regret`` is the oracle's target accuracy minus the
    rule's. Ties go to the first candidate in ``candidates`` order.

    Args:
        candidates: checkpoint name -> :func:`checkpoint_scores` dict.

    Returns:
        ``{"candidates": candidates, "rules": {rule: {"checkpoint", "target_accuracy",
        "regret"}}}``; a rule whose score is missing for some checkpoint is left out.
    """
    def acc(name: str | None) -> float | None:
        return None if name is None else candidates[name].get("target_accuracy")

    def pick(key: str, mode: str) -> str | None:
        vals = {n: c.get(key) for n, c in candidates.items()}
        if not vals or any(v is None or not math.isfinite(v) for v in vals.values()):
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
