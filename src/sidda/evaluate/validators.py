r"""Label-free validators: how good a model looks on the target domain without a target label.

A validator reads a :class:`ValidatorInputs` (labelled source *validation* samples, unlabelled
target samples; there is no target-label field) and returns one number. Every score is reported
so that **higher is better**: risks and entropies are stored with a minus sign. Notation:
:math:`p_i = \mathrm{softmax}(\mathrm{logits}_t)_i` the (N, K) target predictions,
:math:`\hat y_i = \arg\max_k p_{ik}`, :math:`H(p) = -\sum_k p_k\log p_k` in nats,
:math:`\bar p = \frac1N\sum_i p_i`.

* ``entropy`` :math:`= -\frac1N\sum_i H(p_i)`: confident predictions.
* ``im`` (information maximisation) :math:`= H(\bar p) - \frac1N\sum_i H(p_i)`, in
  :math:`[0, \log K]`: confident *and* diverse predictions.
* ``snd`` (soft neighbourhood density; Saito et al., 2021): with :math:`u_i = p_i/\|p_i\|`,
  :math:`M_{ij} = u_i^\top u_j/\tau` for :math:`j \ne i` (:math:`\tau` = 0.05) and
  :math:`q_i = \mathrm{softmax}_j(M_{ij})`, :math:`\mathrm{SND} = \frac1N\sum_i H(q_i)`:
  high when each target sample has many close neighbours in prediction space. It is largest,
  :math:`\log(N-1)`, when all predictions are identical (uniform, or all one class): read it
  next to the collapse flag of :mod:`sidda.evaluate.diagnostics`.
* ``bnm`` (batch nuclear norm; Cui et al., 2020)
  :math:`= \|P\|_* / \sqrt{N\min(N, K)}`, in [0, 1]; 1 for one-hot predictions spread evenly
  over the classes (the bound :math:`\|P\|_* \le \sqrt{\min(N,K)}\,\|P\|_F \le
  \sqrt{\min(N,K)\,N}`).
* ``class_ami`` (Musgrave et al., 2022): adjusted mutual information (sklearn) between
  :math:`\hat y` and a K-means clustering of the target latents into K clusters, started at
  the centroids of the predicted classes (a class never predicted starts at the target sample
  farthest from the centroids so far); 0 when fewer than two classes are predicted.
* ``knn`` :math:`= \frac1N\sum_i 1[\hat y_i = \text{majority label of the } k = 5
  \text{ nearest source latents}]` (Euclidean; a tied vote goes to the label of the nearer
  neighbour): whether the target predictions agree with the labelled source around them.
* ``iwv`` / ``dev`` :math:`= -\hat R_{\mathrm{IWV}}`, :math:`-\hat R_{\mathrm{DEV}}`:
  importance-weighted source-validation cross-entropy (Sugiyama et al., 2007; You et al.,
  2019), :mod:`sidda.evaluate.importance`.
* ``source_acc``: source validation accuracy, the baseline that needs no adaptation idea.

A validator that cannot be computed on the given samples gives None with a reason
(:func:`validator_report`), never an error: too few target images (``snd``, ``im``, ``bnm``,
``class_ami`` and ``knn`` need at least max(K, 3), since fewer cannot show whether the
predictions cover the classes), no source labels, NaN or inf in what it reads. An evaluation
of a run must not fail because its target validation split is small. Quadratic quantities
(``snd``, ``knn``) read at most :data:`MAX_POINTS` samples per domain, a subsample drawn with
a fixed seed (:func:`subsample_indices`), so every checkpoint of a run sees the same points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from sidda.errors import InputError
from sidda.evaluate.importance import DomainFit, domain_classifier, importance_weighted_risk
from sidda.evaluate.label_free import (
    batch_nuclear_norm,
    class_ami,
    entropy_rows,
    information_maximisation,
    knn_agreement,
    soft_neighbourhood_density,
)

if TYPE_CHECKING:
    from sidda.evaluate.predict import Predictions

__all__ = [
    "MAX_POINTS",
    "VALIDATORS",
    "NotComputable",
    "Validator",
    "ValidatorInputs",
    "check_validator_names",
    "subsample_indices",
    "validator_report",
    "validator_scores",
]

#: Most samples per domain that a quadratic quantity reads (a fixed-seed subsample beyond).
MAX_POINTS = 1000


class NotComputable(Exception):
    """A validator cannot be computed on these samples; the message says why."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, eq=False)
class ValidatorInputs:
    """What every validator reads: labelled source validation samples, unlabelled target ones.

    Arrays or tensors; stored as tensors. There is no target-label field: no validator can read
    one. Quantities several validators share (the softmax, the domain classifier of IWV, DEV
    and the proxy A-distance) are computed once, on first use.

    Raises:
        InputError: inconsistent shapes, fewer than 2 classes, no target sample, labels that
            are not integers in 0..K-1.
    """

    latents_s: Tensor  #: (N_s, D) source validation latents (N_s may be 0)
    logits_s: Tensor  #: (N_s, K)
    labels_s: Tensor | None  #: (N_s,) integer labels, or None
    latents_t: Tensor  #: (N_t, D) target latents
    logits_t: Tensor  #: (N_t, K)

    def __post_init__(self) -> None:
        for name in ("latents_s", "logits_s", "latents_t", "logits_t"):
            x = torch.as_tensor(getattr(self, name))
            if not x.is_floating_point():
                x = x.double()
            if x.ndim != 2:
                raise InputError(f"{name} must be 2-D (samples, features), got shape "
                                 f"{tuple(x.shape)}")
            object.__setattr__(self, name, x.detach().cpu())
        n_t, k = self.logits_t.shape
        n_s = len(self.logits_s)
        if n_t < 1:
            raise InputError("no target samples: validators need at least one target image")
        if k < 2:
            raise InputError(f"logits_t has {k} column(s); a classifier needs >= 2 classes")
        if len(self.latents_t) != n_t:
            raise InputError(f"latents_t has {len(self.latents_t)} rows but logits_t has {n_t}")
        if self.logits_s.shape[1] != k and n_s:
            raise InputError(f"logits_s has {self.logits_s.shape[1]} classes, logits_t {k}")
        if len(self.latents_s) != n_s:
            raise InputError(f"latents_s has {len(self.latents_s)} rows but logits_s has {n_s}")
        if n_s and self.latents_s.shape[1] != self.latents_t.shape[1]:
            raise InputError(f"latents_s has {self.latents_s.shape[1]} features, latents_t "
                             f"{self.latents_t.shape[1]}; pass latents of the same model")
        if self.labels_s is not None:
            y = torch.as_tensor(self.labels_s)
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise InputError(f"labels_s must be integers, got {y.dtype}")
            if y.shape != (n_s,):
                raise InputError(f"labels_s has shape {tuple(y.shape)}; expected ({n_s},)")
            if n_s and (int(y.min()) < 0 or int(y.max()) >= k):
                raise InputError(f"labels_s must lie in 0..{k - 1}, got {int(y.min())}.."
                                 f"{int(y.max())}")
            object.__setattr__(self, "labels_s", y.long().cpu())

    @classmethod
    def from_predictions(cls, source: Predictions, target: Predictions) -> ValidatorInputs:
        """From the :class:`~sidda.evaluate.Predictions` of the two validation sets; the
        target's labels, if it has any, are not read."""
        return cls(source.latents, source.logits, source.labels, target.latents, target.logits)

    @property
    def num_classes(self) -> int:
        """K."""
        return self.logits_t.shape[1]

    @cached_property
    def probs_t(self) -> Tensor:
        """(N_t, K) float64 target softmax."""
        return torch.softmax(self.logits_t.double(), dim=1)

    @cached_property
    def domain_fit(self) -> DomainFit:
        """The cross-fitted domain classifier
        (:func:`~sidda.evaluate.importance.domain_classifier`).

        Raises:
            NotComputable: fewer than 2 samples in a domain, or NaN / inf in the latents.
        """
        _finite(self, "latents_s", "latents_t")
        try:
            return domain_classifier(self.latents_s, self.latents_t)
        except ValueError as e:
            raise NotComputable(str(e)) from None


def subsample_indices(n: int, *, max_points: int = MAX_POINTS, seed: int = 0) -> Tensor:
    """Sorted indices of at most ``max_points`` of ``n`` samples: all of them, or a subsample
    drawn without replacement with ``seed``.

    >>> subsample_indices(3).tolist()
    [0, 1, 2]
    >>> len(subsample_indices(10, max_points=4))
    4
    """
    if n <= max_points:
        return torch.arange(n)
    idx = np.random.default_rng(seed).choice(n, size=max_points, replace=False)
    return torch.from_numpy(np.sort(idx))


def _finite(inputs: ValidatorInputs, *names: str) -> None:
    for name in names:
        if not bool(torch.isfinite(getattr(inputs, name)).all()):
            raise NotComputable(f"{name} holds NaN or inf values")


def _need_target(inputs: ValidatorInputs) -> None:
    n_t, k = len(inputs.logits_t), inputs.num_classes
    if n_t < max(k, 3):
        raise NotComputable(f"{n_t} target images for {k} classes: needs at least "
                            f"{max(k, 3)} to tell whether the predictions cover the classes")


def _need_labels(inputs: ValidatorInputs) -> Tensor:
    if inputs.labels_s is None or not len(inputs.labels_s):
        raise NotComputable("needs labelled source validation samples")
    return inputs.labels_s


# --------------------------------------------------------------------------- the family


def _entropy(inputs: ValidatorInputs) -> float:
    _finite(inputs, "logits_t")
    return -float(entropy_rows(inputs.probs_t).mean())


def _im(inputs: ValidatorInputs) -> float:
    _finite(inputs, "logits_t")
    _need_target(inputs)
    return information_maximisation(inputs.probs_t)


def _snd(inputs: ValidatorInputs) -> float:
    _finite(inputs, "logits_t")
    _need_target(inputs)
    return soft_neighbourhood_density(inputs.probs_t[subsample_indices(len(inputs.probs_t))])


def _bnm(inputs: ValidatorInputs) -> float:
    _finite(inputs, "logits_t")
    _need_target(inputs)
    return batch_nuclear_norm(inputs.probs_t)


def _class_ami(inputs: ValidatorInputs) -> float:
    _finite(inputs, "logits_t", "latents_t")
    _need_target(inputs)
    return class_ami(inputs.latents_t, inputs.probs_t.argmax(1), num_classes=inputs.num_classes)


def _knn(inputs: ValidatorInputs) -> float:
    labels = _need_labels(inputs)
    _finite(inputs, "logits_t", "latents_t", "latents_s")
    _need_target(inputs)
    i_t = subsample_indices(len(inputs.latents_t))
    i_s = subsample_indices(len(inputs.latents_s), seed=1)
    return knn_agreement(inputs.latents_t[i_t], inputs.probs_t[i_t].argmax(1),
                         inputs.latents_s[i_s], labels[i_s])


def _risk(inputs: ValidatorInputs, which: str) -> float:
    labels = _need_labels(inputs)
    _finite(inputs, "logits_s")
    weights = inputs.domain_fit.weights_s
    losses = F.cross_entropy(inputs.logits_s.double(), labels, reduction="none").numpy()
    return -getattr(importance_weighted_risk(losses, weights), which)


def _source_acc(inputs: ValidatorInputs) -> float:
    labels = _need_labels(inputs)
    _finite(inputs, "logits_s")
    return float((inputs.logits_s.argmax(1) == labels).double().mean())


class Validator(NamedTuple):
    """One label-free validator; its score is always higher-is-better."""

    name: str
    description: str  #: one line: what the score is, with its sign
    score: Callable[[ValidatorInputs], float]  #: raises NotComputable when it cannot score


#: The label-free validators by name, each higher-is-better.
VALIDATORS: dict[str, Validator] = {v.name: v for v in (
    Validator("entropy", "minus the mean prediction entropy on the target (nats)", _entropy),
    Validator("im", "information maximisation: entropy of the mean target prediction minus "
              "the mean entropy (nats)", _im),
    Validator("snd", "soft neighbourhood density of the target predictions (Saito et al. "
              "2021, temperature 0.05)", _snd),
    Validator("bnm", "nuclear norm of the target prediction matrix over its bound sqrt(N "
              "min(N, K)) (Cui et al. 2020)", _bnm),
    Validator("class_ami", "adjusted mutual information of the target predictions and a "
              "K-means clustering of the target latents (Musgrave et al. 2022)",
              _class_ami),
    Validator("knn", "fraction of target predictions equal to the majority label of the 5 "
              "nearest source validation latents", _knn),
    Validator("iwv", "minus the importance-weighted source validation cross-entropy "
              "(Sugiyama et al. 2007)", lambda inputs: _risk(inputs, "iwv")),
    Validator("dev", "minus the deep-embedded-validation risk: IWV with a control variate "
              "(You et al. 2019)", lambda inputs: _risk(inputs, "dev")),
    Validator("source_acc", "source validation accuracy (reads no target sample)",
              _source_acc),
)}


def check_validator_names(names: Iterable[str] | str | None) -> list[str]:
    """The validator names to compute: all of them for None, else ``names`` checked.

    >>> check_validator_names("im")
    ['im']

    Raises:
        InputError: an unknown name (the message lists the known ones).
    """
    if names is None:
        return list(VALIDATORS)
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in VALIDATORS:
            raise InputError(f"unknown validator {name!r}; choose from "
                             f"{', '.join(VALIDATORS)}")
    return list(dict.fromkeys(names))


def validator_report(inputs: ValidatorInputs, names: Iterable[str] | str | None = None) -> dict:
    """Scores of the named validators (all by default), and why any could not be computed.

    Returns:
        ``{"scores": {name: float or None}, "skipped": {name: reason}}`` (JSON-ready); a
        score is None exactly when its name is in ``skipped``.
    """
    scores: dict[str, float | None] = {}
    skipped: dict[str, str] = {}
    for name in check_validator_names(names):
        try:
            value = float(VALIDATORS[name].score(inputs))
        except NotComputable as e:
            scores[name], skipped[name] = None, str(e)
            continue
        if not math.isfinite(value):
            scores[name], skipped[name] = None, f"the score is {value}"
            continue
        scores[name] = value
    return {"scores": scores, "skipped": skipped}


def validator_scores(inputs: ValidatorInputs,
                     names: Iterable[str] | str | None = None) -> dict[str, float | None]:
    """``{name: score}`` of the named validators (all by default); None where one cannot be
    computed (:func:`validator_report` says why).

    >>> logits_t = torch.tensor([[20.0, 0.0], [0.0, 20.0], [0.0, 0.0]])
    >>> inputs = ValidatorInputs(torch.zeros(0, 2), torch.zeros(0, 2), None,
    ...                          torch.zeros(3, 2), logits_t)  # no source samples
    >>> scores = validator_scores(inputs, ["im", "knn"])  # im: ln 2 - (ln 2)/3
    >>> round(scores["im"], 3), scores["knn"]
    (0.462, None)

    Raises:
        InputError: an unknown name.
    """
    return validator_report(inputs, names)["scores"]
