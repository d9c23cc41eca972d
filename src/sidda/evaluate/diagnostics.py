r"""Label-free diagnostics of one evaluated run: did adaptation collapse, how far apart are the
domains, what do the validators say. No target label is read.

:func:`label_free_diagnostics` returns one JSON-ready dict:

* ``class_fractions``: per class name, the share of the target images predicted as that class
  (``target_predicted``), next to the class's share of the source *training* labels
  (``source_labels``) and its predicted share on the source validation images
  (``source_predicted``);
* ``mean_confidence`` (mean of :math:`\max_k p_{ik}`) and ``mean_entropy`` (mean of
  :math:`-\sum_k p_{ik}\log p_{ik}`, nats), for ``target`` and ``source`` (validation);
* ``collapse``: the flag of :func:`collapse_check`;
* ``domain_distance`` between source validation and target latents: the debiased Sinkhorn
  divergence at the fixed blur the training runs log (:func:`sidda.alignment.fixed_blur_sinkhorn`,
  blur :data:`~sidda.alignment.DIAGNOSTIC_BLUR`), the unbiased Gaussian-kernel MMD² with the
  median-heuristic bandwidth (:func:`sidda.alignment.gaussian_mmd2`), and the out-of-fold
  balanced accuracy of a logistic-regression domain classifier with its proxy A-distance
  :math:`\mathrm{PAD} = 2(1 - 2\,\mathrm{err})` (:mod:`sidda.evaluate.importance`; the same
  fit that IWV and DEV read, made once);
* ``validators`` / ``validators_skipped``: :func:`~sidda.evaluate.validators.validator_report`.

**Collapse rule.** Let N be the number of target images, :math:`n_k` of them predicted as
class k, :math:`q_k = n_k/N`, and :math:`s_k` the share of class k in the source training
labels. The flag is raised when some class is

* *over-predicted*: :math:`q_k \ge \max(2 s_k,\ s_k + 0.25)` (:data:`OVER_FACTOR`,
  :data:`OVER_MARGIN`) and
  :math:`n_k - s_k N \ge 5` (at least :data:`MIN_IMAGES` images more than its source share
  would give), or
* *never predicted*: :math:`n_k = 0` while :math:`s_k N \ge 5` (its source share predicts at
  least :data:`MIN_IMAGES` target images).

The image counts keep a small target set from raising the flag by chance. Each reason names
the class and its numbers. A label shift between the domains can raise the flag without a
collapse: it says "look", not "failed".

The Sinkhorn divergence and the MMD are quadratic in the number of points: they read at most
:data:`~sidda.evaluate.validators.MAX_POINTS` latents per domain, a fixed-seed subsample
(:func:`~sidda.evaluate.validators.subsample_indices`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from sidda.alignment import DIAGNOSTIC_BLUR, fixed_blur_sinkhorn, gaussian_mmd2
from sidda.errors import InputError, short_repr
from sidda.evaluate.label_free import prediction_entropy
from sidda.evaluate.validators import (
    MAX_POINTS,
    NotComputable,
    ValidatorInputs,
    subsample_indices,
    validator_report,
)

__all__ = ["MIN_IMAGES", "OVER_FACTOR", "OVER_MARGIN", "collapse_check", "domain_distances",
           "label_free_diagnostics"]

#: Images a class must be over- or under-predicted by before the collapse flag counts it.
MIN_IMAGES = 5
#: An over-predicted class takes at least this many times its source share ...
OVER_FACTOR = 2
#: ... and at least this much more (a share, 0.25: 25 points).
OVER_MARGIN = 0.25


def collapse_check(
    predicted_counts: Sequence[int] | np.ndarray,
    source_shares: Sequence[float] | np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
) -> dict:
    """The collapse flag (module docstring: the rule) from predicted counts and source shares.

    Args:
        predicted_counts: (K,) target images predicted as each class.
        source_shares: (K,) share of each class in the source training labels (sums to 1).
        class_names: (K,) names for the reasons (default "0", "1", ...).

    Returns:
        ``{"flag": bool, "reasons": [str], "over_predicted": [name], "missing": [name],
        "n": N}``.

    >>> collapse_check([30, 0, 0], [1 / 3, 1 / 3, 1 / 3])["flag"]
    True
    >>> collapse_check([3, 0, 0], [1 / 3, 1 / 3, 1 / 3])["flag"]  # too few images to tell
    False
    """
    n_k = np.asarray(predicted_counts, dtype=float)  # (K,)
    s = np.asarray(source_shares, dtype=float)  # (K,)
    names = [str(c) for c in range(len(n_k))] if class_names is None else list(class_names)
    n = float(n_k.sum())
    q = n_k / n if n else np.zeros_like(n_k)
    over, missing, reasons = [], [], []
    for k, name in enumerate(names):
        share = q[k] >= max(OVER_FACTOR * s[k], s[k] + OVER_MARGIN)
        if share and n_k[k] - s[k] * n >= MIN_IMAGES:
            over.append(name)
            reasons.append(f"class {name!r} takes {q[k]:.0%} of the target predictions "
                           f"({int(n_k[k])} of {int(n)}) against {s[k]:.0%} of the source labels")
        if n_k[k] == 0 and s[k] * n >= MIN_IMAGES:
            missing.append(name)
            reasons.append(f"class {name!r} is never predicted on {int(n)} target images, "
                           f"though its source share ({s[k]:.0%}) predicts {s[k] * n:.0f}")
    return {"flag": bool(reasons), "reasons": reasons, "over_predicted": over,
            "missing": missing, "n": int(n)}


def domain_distances(inputs: ValidatorInputs) -> dict:
    """Sinkhorn (fixed blur), MMD² and the domain classifier's PAD between the two latent sets.

    Returns:
        ``{"sinkhorn_fixed_blur", "blur", "mmd2", "mmd_bandwidth", "domain_accuracy", "pad",
        "points": {"source", "target"}, "skipped": {quantity: reason}}``; a quantity that cannot
        be computed is None with its reason in ``skipped``.
    """
    i_s = subsample_indices(len(inputs.latents_s), seed=1)
    i_t = subsample_indices(len(inputs.latents_t))
    z_s, z_t = inputs.latents_s[i_s], inputs.latents_t[i_t]  # (<= MAX_POINTS, D)
    out: dict = {"sinkhorn_fixed_blur": None, "blur": DIAGNOSTIC_BLUR, "mmd2": None,
                 "mmd_bandwidth": None, "domain_accuracy": None, "pad": None,
                 "points": {"source": len(i_s), "target": len(i_t)}, "skipped": {}}
    finite = bool(torch.isfinite(z_s).all()) and bool(torch.isfinite(z_t).all())
    if not len(z_s) or not finite:
        why = "no source samples" if not len(z_s) else "the latents hold NaN or inf values"
        out["skipped"] = {k: why for k in ("sinkhorn_fixed_blur", "mmd2", "pad")}
        return out
    out["sinkhorn_fixed_blur"] = float(
        fixed_blur_sinkhorn(z_s, z_t, blur=DIAGNOSTIC_BLUR, max_points=MAX_POINTS,
                            backend="dense"))
    try:
        mmd = gaussian_mmd2(z_s, z_t)
        out.update(mmd2=mmd.mmd2, mmd_bandwidth=mmd.bandwidth)
    except ValueError as e:
        out["skipped"]["mmd2"] = str(e)
    try:
        fit = inputs.domain_fit
        out.update(domain_accuracy=fit.balanced_accuracy(), pad=fit.proxy_a_distance())
    except NotComputable as e:
        out["skipped"]["pad"] = str(e)
    return out


def _confidence(logits: Tensor) -> tuple[float | None, float | None]:
    """Mean max-softmax and mean entropy (nats) of (N, K) logits; None for none or non-finite."""
    if not len(logits) or not bool(torch.isfinite(logits).all()):
        return None, None
    z = logits.double()  # (N, K)
    return (float(torch.softmax(z, dim=1).max(1).values.mean()),
            float(prediction_entropy(z).mean()))


def _shares(counts: Sequence[float] | np.ndarray | Tensor, k: int) -> np.ndarray:
    try:
        c = np.asarray(counts, dtype=float)
    except (TypeError, ValueError):
        c = np.full(0, np.nan)
    if c.shape != (k,) or not np.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
        raise InputError(f"source_class_counts must hold {k} non-negative counts (the source "
                         "training labels per class) with a positive sum, got "
                         f"{short_repr(counts)}")
    return c / c.sum()


def label_free_diagnostics(
    *,
    logits_t: Tensor | np.ndarray,
    latents_t: Tensor | np.ndarray,
    latents_s: Tensor | np.ndarray,
    logits_s: Tensor | np.ndarray,
    labels_s: Tensor | np.ndarray | None,
    source_class_counts: Sequence[float] | np.ndarray | Tensor,
    class_names: Sequence[str] | None = None,
    validators: Iterable[str] | str | None = None,
) -> dict:
    """Everything a run's target predictions tell without target labels (JSON-ready).

    The module docstring describes each field and the collapse rule.

    Args:
        logits_t: (N_t, K) target logits (the target test images, say).
        latents_t: (N_t, D) their latents.
        latents_s: (N_s, D) source validation latents (N_s may be 0).
        logits_s: (N_s, K) their logits.
        labels_s: (N_s,) their labels, or None.
        source_class_counts: (K,) source training images per class.
        class_names: (K,) class names (default "0", "1", ...).
        validators: Validator names (default all; ``()`` for none).

    Returns:
        ``{"n": {"target", "source"}, "class_fractions": {name: {"target_predicted",
        "source_labels", "source_predicted"}}, "mean_confidence": {"target", "source"},
        "mean_entropy": {"target", "source"}, "collapse": {...}, "domain_distance": {...},
        "validators": {name: score}, "validators_skipped": {name: reason}}``. Numbers that
        read NaN or inf logits are None (``collapse.flag`` too, with the reason).

    Raises:
        InputError: inconsistent shapes (:class:`~sidda.evaluate.validators.ValidatorInputs`),
            bad ``source_class_counts`` or ``class_names``, an unknown validator.
    """
    inputs = ValidatorInputs(latents_s, logits_s, labels_s, latents_t, logits_t)
    k = inputs.num_classes
    shares = _shares(source_class_counts, k)
    if class_names is None:
        names = [str(c) for c in range(k)]
    else:
        names = [str(c) for c in class_names]
        if len(names) != k or len(set(names)) != k:
            raise InputError(f"class_names must be {k} distinct names, got {names}")
    report = validator_report(inputs, validators)  # checks the names before any other work
    n_t, n_s = len(inputs.logits_t), len(inputs.logits_s)
    conf_t, ent_t = _confidence(inputs.logits_t)
    conf_s, ent_s = _confidence(inputs.logits_s)
    pred_s = None
    if conf_s is not None:
        pred_s = np.bincount(inputs.logits_s.argmax(1).numpy(), minlength=k) / n_s
    if conf_t is not None:
        counts_t = np.bincount(inputs.logits_t.argmax(1).numpy(), minlength=k)  # (K,)
        collapse = collapse_check(counts_t, shares, class_names=names)
        pred_t: list = (counts_t / n_t).tolist()
    else:
        collapse = {"flag": None, "reasons": ["logits_t holds NaN or inf values"],
                    "over_predicted": [], "missing": [], "n": n_t}
        pred_t = [None] * k
    fractions = {
        name: {"target_predicted": pred_t[c], "source_labels": float(shares[c]),
               "source_predicted": None if pred_s is None else float(pred_s[c])}
        for c, name in enumerate(names)
    }
    return {
        "n": {"target": n_t, "source": n_s},
        "class_fractions": fractions,
        "mean_confidence": {"target": conf_t, "source": conf_s},
        "mean_entropy": {"target": ent_t, "source": ent_s},
        "collapse": collapse,
        "domain_distance": domain_distances(inputs),
        "validators": report["scores"],
        "validators_skipped": report["skipped"],
    }
