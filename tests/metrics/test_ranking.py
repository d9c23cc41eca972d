"""Rank agreement of validators with target accuracy: against literal computations, SciPy and
known cases."""

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from sidda.errors import InputError
from sidda.evaluate import VALIDATORS
from sidda.metrics import (
    DEFAULT_VALIDATOR,
    rank_runs,
    regret,
    spearman,
    validator_agreement,
    weighted_spearman,
)


def _literal_weighted_spearman(v, a, power=2.0):
    """The module docstring's formula, one loop per symbol."""
    n = len(v)

    def dense_share(x):
        distinct = sorted(set(x))
        return [(distinct.index(xi) + 1) / len(distinct) for xi in x]

    rv, ra = dense_share(v), dense_share(a)
    w = [max(rv[i], ra[i]) ** power for i in range(n)]

    def mid_rank(x):
        return [sum(w[j] for j in range(n) if x[j] < x[i])
                + 0.5 * sum(w[j] for j in range(n) if x[j] == x[i]) for i in range(n)]

    Rv, Ra = mid_rank(v), mid_rank(a)
    W = sum(w)
    mv, ma = sum(w[i] * Rv[i] for i in range(n)) / W, sum(w[i] * Ra[i] for i in range(n)) / W
    cov = sum(w[i] * (Rv[i] - mv) * (Ra[i] - ma) for i in range(n))
    vv = sum(w[i] * (Rv[i] - mv) ** 2 for i in range(n))
    va = sum(w[i] * (Ra[i] - ma) ** 2 for i in range(n))
    return cov / math.sqrt(vv * va)


def test_weighted_spearman_matches_the_literal_formula():
    rng = np.random.default_rng(0)
    for n in (3, 5, 12):
        v = rng.normal(size=n).round(1)  # rounding makes ties
        a = (v + rng.normal(size=n)).round(1)
        assert weighted_spearman(v, a) == pytest.approx(_literal_weighted_spearman(v, a),
                                                        rel=1e-12)
        assert weighted_spearman(v, a, power=3) == pytest.approx(
            _literal_weighted_spearman(v, a, 3.0), rel=1e-12)


def test_perfect_and_reversed_orders_give_one_and_minus_one():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=9)
    assert weighted_spearman(a * 3 + 1, a) == pytest.approx(1.0)
    assert weighted_spearman(-a, a) == pytest.approx(-1.0)
    tied = np.array([1, 1, 2, 3, 3, 3, 4.0])
    assert weighted_spearman(np.exp(tied), tied) == pytest.approx(1.0)
    assert weighted_spearman(-tied, tied) == pytest.approx(-1.0)


def test_with_equal_weights_it_is_scipys_spearman():
    rng = np.random.default_rng(2)
    for _ in range(5):
        v = rng.integers(0, 5, 10).astype(float)  # many ties
        a = rng.normal(size=10)
        expect = spearmanr(v, a).statistic
        assert weighted_spearman(v, a, power=0) == pytest.approx(expect, rel=1e-12)
        assert spearman(v, a) == pytest.approx(expect, rel=1e-12)


def test_the_top_of_the_ranking_weighs_more():
    a = np.arange(10.0)
    swap_top, swap_bottom = a.copy(), a.copy()
    swap_top[[8, 9]] = swap_top[[9, 8]]
    swap_bottom[[0, 1]] = swap_bottom[[1, 0]]
    assert spearman(swap_top, a) == pytest.approx(spearman(swap_bottom, a))
    assert weighted_spearman(swap_top, a) < weighted_spearman(swap_bottom, a) < 1


def test_degenerate_inputs():
    assert math.isnan(weighted_spearman([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]))
    assert math.isnan(weighted_spearman([1.0], [0.5]))
    with pytest.raises(InputError, match="one length"):
        weighted_spearman([1.0, 2.0], [0.5])
    with pytest.raises(InputError, match="finite"):
        spearman([1.0, float("nan")], [0.5, 0.6])


def test_regret_reads_the_first_of_tied_picks():
    acc = [0.70, 0.80, 0.60, 0.75]
    assert regret([0.1, 0.9, 0.3, 0.2], acc) == pytest.approx(0.0)
    assert regret([0.9, 0.5, 0.9, 0.2], acc) == pytest.approx(0.80 - 0.70)  # tie: run 0
    assert regret([0.1, 0.5, 0.9, 0.2], acc) == pytest.approx(0.80 - 0.60)
    with pytest.raises(InputError):
        regret([], [])


RUNS = [
    {"name": "a", "validators": {"im": 0.2, "snd": 1.0}, "target_accuracy": 0.60},
    {"name": "b", "validators": {"im": 0.5, "snd": None}, "target_accuracy": 0.75},
    {"name": "c", "validators": {"im": 0.4, "snd": 3.0}, "target_accuracy": 0.80},
    {"name": "d", "validators": {"im": 0.9, "snd": 2.0}, "target_accuracy": None},
]


def test_validator_agreement_layout_and_values():
    out = validator_agreement(RUNS)
    assert out["n_runs"] == 4 and out["labelled_runs"] == 3
    assert out["best"] == {"name": "c", "target_accuracy": 0.80}
    im = out["validators"]["im"]
    assert im["pick"] == "d" and im["pick_accuracy"] is None and im["regret"] is None
    assert im["n_scored"] == 4 and im["n_runs"] == 3
    assert im["spearman"] == pytest.approx(spearmanr([0.2, 0.5, 0.4], [0.6, 0.75, 0.8])[0])
    assert im["weighted_spearman"] == pytest.approx(
        _literal_weighted_spearman([0.2, 0.5, 0.4], [0.6, 0.75, 0.8]))
    snd = out["validators"]["snd"]
    assert snd["pick"] == "c" and snd["regret"] == pytest.approx(0.0)
    assert snd["n_scored"] == 3 and snd["n_runs"] == 2 and snd["spearman"] == pytest.approx(1)
    json.dumps(out, allow_nan=False)
    only = validator_agreement(RUNS[:3], validators=["im"])
    assert list(only["validators"]) == ["im"]
    assert only["validators"]["im"]["pick"] == "b"
    assert only["validators"]["im"]["regret"] == pytest.approx(0.80 - 0.75)


def test_validator_agreement_says_why_a_correlation_is_missing():
    out = validator_agreement([{"name": "x", "validators": {"im": 0.1}, "target_accuracy": 0.5},
                               {"name": "y", "validators": {"im": 0.1}, "target_accuracy": 0.6}])
    assert out["validators"]["im"]["spearman"] is None
    assert "constant" in out["validators"]["im"]["reason"]
    unlabelled = validator_agreement([{"name": "x", "validators": {"im": 0.1}}])
    assert unlabelled["best"] is None and unlabelled["validators"]["im"]["pick"] == "x"
    assert "0 run(s)" in unlabelled["validators"]["im"]["reason"]


def test_rank_runs_orders_best_first_with_unscored_last():
    ranked = rank_runs(RUNS, "snd")
    assert [r["name"] for r in ranked] == ["c", "d", "a", "b"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, None]
    tied = rank_runs([{"name": n, "validators": {"im": s}} for n, s in
                      (("p", 0.3), ("q", 0.5), ("r", 0.3))], "im")
    assert [(r["name"], r["rank"]) for r in tied] == [("q", 1), ("p", 2), ("r", 2)]


def test_bad_runs_and_names_are_input_errors():
    with pytest.raises(InputError, match="no run has a 'bnm' score; the runs have im, snd"):
        rank_runs(RUNS, "bnm")
    with pytest.raises(InputError, match="no run has a 'bnm'"):
        validator_agreement(RUNS, validators=["bnm"])
    with pytest.raises(InputError, match="'validators' mapping"):
        validator_agreement([{"name": "a", "im": 0.3}])
    with pytest.raises(InputError, match="unique"):
        rank_runs([RUNS[0], RUNS[0]], "im")


def test_the_default_validator_is_one_of_the_family():
    assert DEFAULT_VALIDATOR in VALIDATORS
