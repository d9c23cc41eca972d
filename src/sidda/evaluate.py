r"""Evaluate a trained run: test metrics, calibration, and label-free checkpoint selection.

:func:`sidda.experiments.evaluate_run` drives the functions here and writes ``metrics.json``
into the run directory::

    {"method": "sidda" | "source_only", "model": "cnn", "checkpoint": "final", "n_bins": 15,
     "source": {"n", "accuracy", "ece", "brier", "nll", "confusion_matrix", "report",
                "temperature_scaled": {"ece", "brier", "nll"},
                "paper_compatible": {"probe_accuracy", "probe_ece", "probe_brier",
                                     "network_ece", "network_brier", ...}},
     "target": {...},
     "temperature": {"value", "fitted_on", "n", "val_nll_before", "val_nll_after"},
     "selection": {"candidates": {...}, "rules": {...}}}

Beside it: ``logits_``, ``probs_``, ``labels_`` and ``latents_{source,target}.npy`` in file
order. A target domain without labels gets predictions but no label-based metrics.

Three kinds of numbers, kept apart (docs/evaluation.md explains each):

* **The network's own calibration** on its softmax: equal-width binned ECE, multiclass Brier
  :math:`\frac1N\sum_i\sum_k(p_{ik}-1[y_i=k])^2` and NLL. Then the same after temperature
  scaling, with :math:`T` fitted on the **source validation split only**
  (:func:`fit_source_temperature`); no target label is read.
* **Paper-compatible** numbers (:func:`paper_compatible`): the authors' logistic-regression
  probe on the latents, sigmoid-calibrated, with their per-sample "ECE" and Brier divided by
  K, but cross-fitted so that no image is scored by a probe that saw its label. The probe is
  fitted with the labels of the domain it scores (target labels for the target): it is a
  comparison with the paper, not a result.
* **Label-free checkpoint selection** (:func:`checkpoint_scores`, :func:`select_checkpoints`):
  what each rule that reads no target label would pick among the saved checkpoints, next to
  the oracle that reads the target test labels.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sidda import metrics
from sidda.datasets import ImageSet
from sidda.models import export_model
from sidda.errors import InputError, short_repr
from sidda.runs import atomic_write, fsync_dir, load_history, write_json

__all__ = [
    "MAX_BINS",
    "PREDICTION_FILES",
    "RULES",
    "IsomapEmbedding",
    "Predictions",
    "RiskEstimate",
    "check_bins",
    "checkpoint_scores",
    "clean_staging",
    "domain_metrics",
    "domain_weights",
    "fit_source_temperature",
    "importance_weighted_risk",
    "isomap_embedding",
    "load_history",
    "paper_compatible",
    "predict",
    "prediction_entropy",
    "publish_evaluation",
    "select_checkpoints",
    "temperature_metrics",
]

logger = logging.getLogger(__name__)

#: Most ECE bins an evaluation takes (the reliability diagram draws every bin).
MAX_BINS = 1000


def check_bins(n_bins: object) -> int:
    """``n_bins`` if it is an integer in 1..:data:`MAX_BINS`, else :class:`InputError`.

    >>> check_bins(15)
    15
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 1 <= n_bins <= MAX_BINS:
        raise InputError(
            f"--bins (n_bins) must be an integer in 1..{MAX_BINS}, got {short_repr(n_bins)}; "
            "the default is 15"
        )
    return n_bins

#: Label-free selection rules: name -> (score key in the candidate dict, "min" or "max").
RULES: dict[str, tuple[str, str]] = {
    "best_val_acc": ("val_acc_s", "max"),
    "best_val_loss": ("val_total", "min"),
    "entropy": ("target_val_entropy", "min"),
    "iwv": ("iwv_risk", "min"),
    "dev": ("dev_risk", "min"),
}


@dataclass
class Predictions:
    """Network outputs on one image set, in file order."""

    logits: Tensor  # (N, K)
    latents: Tensor  # (N, D)
    labels: Tensor | None  # (N,)

    @property
    def probs(self) -> Tensor:
        """Softmax probabilities (N, K)."""
        return self.logits.softmax(1)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: ImageSet,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    export: bool = True,
) -> Predictions:
    """Run ``model`` in eval mode over ``images``.

    Args:
        model: A classifier returning ``(latent, logits)``.
        images: The images to classify.
        batch_size: Images per forward pass.
        device: Where to compute.
        export: Use escnn's ``export()`` (plain PyTorch, same function, faster).
    """
    net = export_model(model) if export else model.eval()
    net.to(device)
    zs, ls = [], []
    for idx in torch.arange(len(images)).split(batch_size):
        z, logits = net(images.x[idx].to(device))
        zs.append(z.float().cpu())
        ls.append(logits.float().cpu())
    return Predictions(torch.cat(ls), torch.cat(zs), images.y)


def domain_metrics(
    pred: Predictions, *, num_classes: int, class_names: list[str] | None = None, n_bins: int = 15
) -> dict:
    """Accuracy, calibration and the classification report of one domain (JSON-ready)."""
    out: dict = {"n": len(pred.logits)}
    if pred.labels is None:
        out["labelled"] = False
        out["predicted_class_counts"] = torch.bincount(
            pred.logits.argmax(1), minlength=num_classes
        ).tolist()
        return out
    probs, y = pred.probs, pred.labels
    preds = probs.argmax(1)
    out.update(
        labelled=True,
        accuracy=float(metrics.accuracy(probs, y)),
        ece=float(metrics.expected_calibration_error(probs, y, n_bins=n_bins)),
        brier=float(metrics.brier_score(probs, y)),
        nll=float(metrics.negative_log_likelihood(probs, y)),
        confusion_matrix=metrics.confusion_matrix(preds, y, num_classes=num_classes).tolist(),
        report=metrics.classification_report(
            preds, y, num_classes=num_classes, class_names=class_names
        ),
    )
    return out


# --------------------------------------------------------------------------- temperature


def fit_source_temperature(val_s: Predictions) -> dict:
    """Fit temperature scaling on the **source validation** predictions (JSON-ready).

    Takes only source-validation logits and labels, so no target label can reach the fit.

    Returns:
        ``{"value": T, "fitted_on": "source validation split", "n": N, "val_nll_before",
        "val_nll_after"}`` (plus ``"warning"`` when T hit a search bound, which is also
        logged), or ``{"value": None, "reason": ...}`` without a labelled split.
    """
    if val_s.labels is None or len(val_s.logits) == 0:
        return {"value": None, "fitted_on": "source validation split",
                "reason": "no labelled source validation images (data.val_fraction = 0?)"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = metrics.fit_temperature(val_s.logits, val_s.labels)
    notes = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    for note in notes:
        logger.warning("temperature scaling: %s", note)
    before = float(F.cross_entropy(val_s.logits.double(), val_s.labels))
    after = float(F.cross_entropy(val_s.logits.double() / t, val_s.labels))
    out = {"value": t, "fitted_on": "source validation split", "n": len(val_s.logits),
           "val_nll_before": before, "val_nll_after": after}
    if notes:
        out["warning"] = "; ".join(notes)
    return out


def temperature_metrics(
    logits: Tensor, labels: Tensor, temperature: float, *, n_bins: int = 15
) -> dict:
    """ECE, Brier and NLL of ``softmax(logits / T)`` (accuracy does not change with T)."""
    probs = metrics.apply_temperature(logits.double(), temperature)  # (N, K)
    return {
        "ece": float(metrics.expected_calibration_error(probs, labels, n_bins=n_bins)),
        "brier": float(metrics.brier_score(probs, labels)),
        "nll": float(metrics.negative_log_likelihood(probs, labels)),
    }


# --------------------------------------------------------------------------- paper protocol


def _one_thread():  # noqa: ANN202
    """Run small sklearn fits on one thread.

    Many tiny BLAS/OpenMP calls (L-BFGS on a few hundred latents) are several times slower
    with a thread pool than without one, especially next to torch's own OpenMP threads.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def paper_compatible(pred: Predictions, *, n_splits: int = 5, random_state: int = 0) -> dict:
    """The authors' calibration protocol and formulas (``test_calibration.py``), cross-fitted.

    * ``probe_*``: a ``CalibratedClassifierCV(LogisticRegression, method="sigmoid")`` probe on
      the latents, scored out of fold (``n_splits`` stratified folds) with the paper's
      per-sample "ECE" (:func:`sidda.metrics.paper_ece`) and Brier / K
      (:func:`sidda.metrics.paper_brier`). It reads the labels of this domain.
    * ``network_*``: the same two formulas on the network's own softmax, which separates the
      effect of the formulas from the effect of the probe.

    A domain too small for the folds gets ``{"probe_error": reason}`` instead of the probe.
    """
    if pred.labels is None:
        return {"reason": "no labels in this domain"}
    out: dict = {
        "protocol": f"LR probe on latents, sigmoid calibration, {n_splits}-fold out-of-fold; "
                    "ECE = mean |conf - correct|, Brier / K",
        "network_ece": float(metrics.paper_ece(pred.probs, pred.labels)),
        "network_brier": float(metrics.paper_brier(pred.probs, pred.labels)),
    }
    try:
        with _one_thread():
            res = metrics.paper_probe_calibration(
                pred.latents.double(), pred.labels, n_splits=n_splits, random_state=random_state
            )
    except ValueError as e:
        out["probe_error"] = str(e)
        return out
    out.update(probe_accuracy=float(res.accuracy), probe_ece=float(res.ece_paper),
               probe_brier=float(res.brier_paper))
    return out


# --------------------------------------------------------------------------- selection


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
    with _one_thread():
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


# --------------------------------------------------------------------------- latent space


class IsomapEmbedding(NamedTuple):
    """A 2-d Isomap of source and target latents (as in the paper's figures), split by domain."""

    points_s: np.ndarray  #: (n_s, 2) embedded source points
    points_t: np.ndarray  #: (n_t, 2) embedded target points
    preds_s: np.ndarray  #: (n_s,) predicted classes of those source points
    preds_t: np.ndarray  #: (n_t,) predicted classes of those target points
    index_s: np.ndarray  #: (n_s,) rows of the input source latents that were used
    index_t: np.ndarray  #: (n_t,) rows of the input target latents that were used
    n_neighbors: int  #: neighbours of the graph actually used


def isomap_embedding(
    latents_s: np.ndarray,
    latents_t: np.ndarray,
    preds_s: np.ndarray,
    preds_t: np.ndarray,
    *,
    n_points: int = 600,
    n_neighbors: int = 5,
    random_state: int = 0,
) -> IsomapEmbedding:
    """Fit one Isomap on the union of source and target latents and split it by domain.

    As the authors' ``plotting_isomaps_*.ipynb``: ``sklearn.manifold.Isomap(n_components=2,
    n_neighbors=5)`` on the concatenated latents. Unlike them, the ``n_points`` random points
    per domain are drawn *before* the fit, not after, so that the cost stays small on large
    test sets; the map is then of the points shown. A dense eigensolver makes it
    deterministic.

    Args:
        latents_s: (N_s, D) source test latents.
        latents_t: (N_t, D) target test latents.
        preds_s: (N_s,) predicted classes, for colouring.
        preds_t: (N_t,) predicted classes.
        n_points: points per domain (all when fewer).
        n_neighbors: neighbours of the Isomap graph; raised (doubled until the graph is
            connected) when the k-nearest-neighbour graph falls apart, which sklearn would
            otherwise patch with straight-line edges.
        random_state: seed of the subsample.
    """
    from scipy.sparse.csgraph import connected_components
    from sklearn.manifold import Isomap
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(random_state)
    idx = [np.sort(rng.permutation(len(z))[:n_points]) for z in (latents_s, latents_t)]
    z = np.concatenate([np.asarray(latents_s)[idx[0]], np.asarray(latents_t)[idx[1]]])
    z = z.astype(np.float64)  # (n_s + n_t, D)
    k = max(1, min(n_neighbors, len(z) - 1))
    with _one_thread():
        # A disconnected neighbour graph has no geodesic distances between its parts:
        # widen the neighbourhood until it is connected, and say so.
        while k < len(z) - 1 and connected_components(kneighbors_graph(z, k))[0] > 1:
            k = min(2 * k, len(z) - 1)
        if k != n_neighbors:
            logger.info("isomap: %d neighbours instead of %d, to connect the graph",
                        k, n_neighbors)
        emb = Isomap(n_components=2, n_neighbors=k, eigen_solver="dense").fit_transform(z)
    n_s = len(idx[0])
    return IsomapEmbedding(emb[:n_s], emb[n_s:], np.asarray(preds_s)[idx[0]],
                           np.asarray(preds_t)[idx[1]], idx[0], idx[1], k)


# --------------------------------------------------------------------------- files


def _prediction_arrays(pred: Predictions) -> dict[str, np.ndarray]:
    arrays = {"logits": pred.logits.numpy(), "probs": pred.probs.numpy(),
              "latents": pred.latents.numpy()}
    if pred.labels is not None:
        arrays["labels"] = pred.labels.numpy()
    return arrays


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write(path, buf.getvalue())


def save_predictions(run_dir: Path, domain: str, pred: Predictions) -> None:
    """Write ``logits_``, ``probs_``, ``labels_`` and ``latents_<domain>.npy`` atomically.

    Each file on its own; :func:`publish_evaluation` writes a whole evaluation.
    """
    for kind, arr in _prediction_arrays(pred).items():
        _save_npy(run_dir / f"{kind}_{domain}.npy", arr)


def write_metrics(run_dir: Path, report: dict) -> Path:
    """Atomically write ``metrics.json``."""
    return write_json(run_dir / "metrics.json", report)


#: Per-image arrays of an evaluation: ``<kind>_<domain>.npy``.
PREDICTION_FILES = tuple(f"{k}_{d}.npy" for k in ("logits", "probs", "latents", "labels")
                         for d in ("source", "target"))
_STAGING = ".evaluation-staging"


def clean_staging(out_dir: Path) -> None:
    """Remove what an evaluation killed while writing into ``out_dir`` left behind."""
    out_dir = Path(out_dir)
    for p in (out_dir / _STAGING, out_dir.parent / f".{out_dir.name}{_STAGING}",
              out_dir.parent / f".{out_dir.name}.old"):
        if p.is_dir():
            shutil.rmtree(p)


def publish_evaluation(
    out_dir: str | Path, report: dict, preds: dict[str, Predictions], *, own_folder: bool
) -> Path:
    """Write one evaluation (``metrics.json`` and the per-image arrays) as a whole.

    Everything is first written into a staging folder. ``own_folder=True`` (``out_dir`` holds
    nothing else, e.g. ``RUN/eval/<data>``): the staging folder is renamed into place, so a
    reader sees the old evaluation or the new one. ``own_folder=False`` (the run directory):
    ``metrics.json`` is removed first and put back last, and arrays the new evaluation does
    not write (``labels_target.npy`` for an unlabelled target) are removed, so that a
    ``metrics.json`` always describes the arrays beside it; a kill in between leaves no
    ``metrics.json`` (the run counts as not evaluated).

    Returns:
        The path of the new ``metrics.json``.
    """
    out_dir = Path(out_dir)
    clean_staging(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if own_folder:
        staging = out_dir.parent / f".{out_dir.name}{_STAGING}"
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = out_dir / _STAGING
    staging.mkdir()
    names = []
    for domain, pred in preds.items():
        for kind, arr in _prediction_arrays(pred).items():
            names.append(f"{kind}_{domain}.npy")
            _save_npy(staging / names[-1], arr)
    write_metrics(staging, report)
    if own_folder:
        old = out_dir.parent / f".{out_dir.name}.old"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        fsync_dir(out_dir.parent)
        shutil.rmtree(old, ignore_errors=True)
        return out_dir / "metrics.json"
    (out_dir / "metrics.json").unlink(missing_ok=True)
    fsync_dir(out_dir)
    for name in PREDICTION_FILES:
        if name not in names:
            (out_dir / name).unlink(missing_ok=True)  # stale: not part of this evaluation
    for name in names:
        os.replace(staging / name, out_dir / name)
    fsync_dir(out_dir)
    os.replace(staging / "metrics.json", out_dir / "metrics.json")
    fsync_dir(out_dir)
    staging.rmdir()
    return out_dir / "metrics.json"
