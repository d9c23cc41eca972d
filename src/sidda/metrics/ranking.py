r"""How far a label-free validator can be trusted: does it rank runs as target accuracy does?

Over n runs with validator scores :math:`v_i` (higher is better) and target accuracies
:math:`a_i` (read from target labels where a task has them):

* **Weighted Spearman** (Musgrave et al., 2022, "Three New Validators and a Large-Scale
  Benchmark Ranking for Unsupervised Domain Adaptation"). What matters is the top of the
  ranking, so each run is weighted by how high it stands in either ranking:

  .. math::
      w_i = \max(\tilde r^v_i, \tilde r^a_i)^{p}, \qquad p = 2,

  with :math:`\tilde r_i` the dense rank of the value (1 = lowest, ties share a rank) divided
  by the largest dense rank, so :math:`\tilde r \in (0, 1]`. The correlation is the weighted
  Pearson correlation of the weighted mid-ranks

  .. math::
      R^v_i = \sum_{j: v_j < v_i} w_j + \tfrac12 \sum_{j: v_j = v_i} w_j, \qquad
      \rho_w = \frac{\sum_i w_i (R^v_i - \bar R^v)(R^a_i - \bar R^a)}
      {\sqrt{\sum_i w_i (R^v_i - \bar R^v)^2 \sum_i w_i (R^a_i - \bar R^a)^2}},
      \quad \bar R = \frac{\sum_i w_i R_i}{\sum_i w_i}

  (and the same for :math:`R^a`). With equal weights :math:`R_i` is the average rank minus
  1/2 and :math:`\rho_w` is Spearman's :math:`\rho`; the same order gives 1 and the reversed
  order -1 for any weights. (The authors' code places a point at the end of its weight block
  rather than its middle, which loses the exact -1; the weights are theirs.)
* **Regret**: the best run's target accuracy minus the accuracy of the run the validator ranks
  first: what shipping the validator's pick costs. Ties in the score go to the first run in
  the given order.

A validator's reliability varies by task: measure it where target labels exist before trusting
its pick where they do not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from sidda.errors import InputError

__all__ = ["DEFAULT_VALIDATOR", "RANK_POWER", "finite_number", "rank_runs", "regret",
           "spearman", "validator_agreement", "weighted_spearman"]

#: The validator that orders runs when no target labels say which is best (compare, sweep).
#: ClassAMI: chosen by sidda's own agreement numbers (docs/results.md, "Which validator to
#: trust"): over four shifts and sixteen methods, with collapsed runs ranked last, its pick cost
#: the least target accuracy and its ranking agreed best with the target accuracy.
DEFAULT_VALIDATOR = "class_ami"
#: The exponent p of the weights of :func:`weighted_spearman` (Musgrave et al. use 2).
RANK_POWER = 2.0


def _pair(scores: Sequence[float], accuracies: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    v, a = np.asarray(scores, dtype=float), np.asarray(accuracies, dtype=float)
    if v.ndim != 1 or v.shape != a.shape:
        raise InputError(f"scores and accuracies must be two 1-D sequences of one length, got "
                         f"shapes {v.shape} and {a.shape}")
    if not (np.isfinite(v).all() and np.isfinite(a).all()):
        raise InputError("scores and accuracies must be finite numbers (leave out the runs "
                         "without a score)")
    return v, a


def _dense_share(x: np.ndarray) -> np.ndarray:
    """Dense rank (1 = lowest) over the largest dense rank, in (0, 1]."""
    _, inv = np.unique(x, return_inverse=True)
    return (inv + 1) / (inv.max() + 1)


def _mid_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """R_i = sum of w below x_i + half the sum of w at x_i."""
    values, inv = np.unique(x, return_inverse=True)
    mass = np.bincount(inv, weights=w, minlength=len(values))  # weight at each distinct value
    below = np.cumsum(mass) - mass
    return (below + mass / 2)[inv]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    mx, my = np.average(x, weights=w), np.average(y, weights=w)
    sxy = np.sum(w * (x - mx) * (y - my))
    sxx, syy = np.sum(w * (x - mx) ** 2), np.sum(w * (y - my) ** 2)
    if sxx <= 0 or syy <= 0:
        return math.nan
    return float(np.clip(sxy / math.sqrt(sxx * syy), -1.0, 1.0))


def weighted_spearman(
    scores: Sequence[float], accuracies: Sequence[float], *, power: float = RANK_POWER
) -> float:
    """Weighted Spearman correlation of validator scores and target accuracies (module
    docstring: the formula). NaN when either is constant or there are fewer than 2 runs.

    >>> weighted_spearman([0.1, 0.2, 0.3], [0.5, 0.6, 0.9])
    1.0
    >>> weighted_spearman([0.3, 0.2, 0.1], [0.5, 0.6, 0.9])
    -1.0
    """
    v, a = _pair(scores, accuracies)
    if len(v) < 2:
        return math.nan
    w = np.maximum(_dense_share(v), _dense_share(a)) ** power
    return _weighted_pearson(_mid_ranks(v, w), _mid_ranks(a, w), w)


def spearman(scores: Sequence[float], accuracies: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant.

    >>> spearman([1, 2, 3, 4], [1, 3, 2, 4])
    0.8
    """
    v, a = _pair(scores, accuracies)
    if len(v) < 2:
        return math.nan
    ones = np.ones(len(v))
    return _weighted_pearson(_mid_ranks(v, ones), _mid_ranks(a, ones), ones)


def regret(scores: Sequence[float], accuracies: Sequence[float]) -> float:
    """Best accuracy minus the accuracy of the highest-scored run (ties: the first of them).

    >>> round(regret([0.9, 0.5, 0.9], [0.7, 0.8, 0.6]), 3)
    0.1
    """
    v, a = _pair(scores, accuracies)
    if not len(v):
        raise InputError("regret needs at least one run")
    return float(a.max() - a[int(np.argmax(v))])  # argmax keeps the first of ties


def _check_runs(runs: Sequence[Mapping]) -> list[str]:
    """The run names; each run a mapping with a unique "name" and a "validators" mapping."""
    names = []
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping) or not isinstance(run.get("validators"), Mapping):
            raise InputError(f"run {i} must be a mapping with a 'validators' mapping of "
                             "scores, e.g. {'name': 'a', 'validators': {'im': 0.4}, "
                             "'target_accuracy': 0.8}")
        names.append(str(run.get("name", i)))
    if len(set(names)) != len(names):
        raise InputError(f"run names must be unique, got {names}")
    return names


def finite_number(x: object) -> float | None:
    """``x`` as a float when it is a finite number (not a bool), else None.

    >>> finite_number(2), finite_number(float("nan")), finite_number(True), finite_number("1")
    (2.0, None, None, None)
    """
    ok = isinstance(x, int | float | np.floating | np.integer) and not isinstance(x, bool)
    return float(x) if ok and math.isfinite(float(x)) else None


def _known(runs: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(k for run in runs for k in run["validators"]))


def rank_runs(runs: Sequence[Mapping], validator: str) -> list[dict]:
    """The runs ordered by one validator, best first; runs it could not score come last.

    Args:
        runs: ``[{"name": str, "validators": {name: score or None}, ...}]``.
        validator: A validator name that the runs' ``validators`` hold.

    Returns:
        ``[{"name", "score", "rank"}]``: rank 1 is the highest score, tied scores share the
        lowest rank of their group and keep the given order; an unscored run has score and
        rank None.

    Raises:
        InputError: a malformed run, or no run has ``validator``.

    >>> rank_runs([{"name": "a", "validators": {"im": 0.1}},
    ...            {"name": "b", "validators": {"im": 0.3}}], "im")[0]
    {'name': 'b', 'score': 0.3, 'rank': 1}
    """
    names = _check_runs(runs)
    if validator not in _known(runs):
        raise InputError(f"no run has a {validator!r} score; the runs have "
                         f"{', '.join(_known(runs)) or 'no validator scores'}")
    scores = [finite_number(run["validators"].get(validator)) for run in runs]
    order = sorted((i for i, s in enumerate(scores) if s is not None),
                   key=lambda i: -scores[i])  # stable: ties keep the given order
    out: list[dict] = []
    for pos, i in enumerate(order):
        tied = pos > 0 and scores[i] == out[-1]["score"]
        out.append({"name": names[i], "score": scores[i],
                    "rank": out[-1]["rank"] if tied else pos + 1})
    out += [{"name": names[i], "score": None, "rank": None}
            for i, s in enumerate(scores) if s is None]
    return out


def validator_agreement(runs: Sequence[Mapping], *,
                        validators: Iterable[str] | None = None) -> dict:
    """How each validator ranks the runs, and how well that matches target accuracy.

    Args:
        runs: ``[{"name": str, "validators": {name: score or None}, "target_accuracy":
            float or None}]``, e.g. one per run of a sweep, or per checkpoint of a run.
        validators: Names to report (default: every name any run holds).

    Returns:
        ``{"n_runs", "labelled_runs", "best": {"name", "target_accuracy"} or None,
        "validators": {name: {"pick", "pick_accuracy", "weighted_spearman", "spearman",
        "regret", "n_scored", "n_runs", "reason"}}}`` (JSON-ready). ``pick`` is the run the
        validator ranks first among those it scored; the correlations read the ``n_runs`` runs
        with both a score and a target accuracy (None below 2 runs or for a constant score,
        with the ``reason``); ``regret`` is the best target accuracy of all labelled runs minus
        the pick's (None when the pick has none).

    Raises:
        InputError: a malformed run, or an unknown validator name.
    """
    names = _check_runs(runs)
    known = _known(runs)
    wanted = known if validators is None else list(validators)
    for name in wanted:
        if name not in known:
            raise InputError(f"no run has a {name!r} score; choose from "
                             f"{', '.join(known) or 'nothing (no validator scores)'}")
    acc = [finite_number(run.get("target_accuracy")) for run in runs]
    labelled = [i for i, a in enumerate(acc) if a is not None]
    best = max(labelled, key=lambda i: acc[i], default=None)  # max keeps the first of ties
    out: dict = {}
    for name in wanted:
        s = [finite_number(run["validators"].get(name)) for run in runs]
        scored = [i for i, x in enumerate(s) if x is not None]
        both = [i for i in scored if acc[i] is not None]
        pick = max(scored, key=lambda i: s[i], default=None)
        entry: dict = {"pick": None if pick is None else names[pick],
                       "pick_accuracy": None if pick is None else acc[pick],
                       "weighted_spearman": None, "spearman": None, "regret": None,
                       "n_scored": len(scored), "n_runs": len(both), "reason": None}
        if best is not None and pick is not None and acc[pick] is not None:
            entry["regret"] = acc[best] - acc[pick]
        v, a = [s[i] for i in both], [acc[i] for i in both]
        if len(both) >= 2:
            entry["weighted_spearman"] = _none_if_nan(weighted_spearman(v, a))
            entry["spearman"] = _none_if_nan(spearman(v, a))
        if entry["spearman"] is None:
            entry["reason"] = (f"{len(both)} run(s) with both a score and a target accuracy"
                               if len(both) < 2 else "the scores or the accuracies are constant")
        out[name] = entry
    return {"n_runs": len(runs), "labelled_runs": len(labelled),
            "best": None if best is None else {"name": names[best],
                                               "target_accuracy": acc[best]},
            "validators": out}


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x
