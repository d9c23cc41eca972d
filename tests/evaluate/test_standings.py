"""Label-free standings of runs: the ranking (collapsed runs never first) and the agreement."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidda.compare import summarize_compare
from sidda.evaluate.standings import (
    agreement,
    collapse_cell,
    label_free_ranking,
    ranked_by,
    run_facts,
    standings,
    standings_tables,
)
from sidda.metrics import validator_agreement


def _metrics(im, *, flag=False, acc=None, sinkhorn=1.0):
    m = {"label_free": {"validators": {"im": im, "entropy": None if im is None else -im / 2},
                        "validators_skipped": {} if im is not None else {"im": "too few"},
                        "collapse": {"flag": flag},
                        "domain_distance": {"sinkhorn_fixed_blur": sinkhorn}},
         "target": {"labelled": acc is not None}}
    if acc is not None:
        m["target"]["accuracy"] = acc
    return m


entries = st.lists(st.tuples(st.one_of(st.none(), st.sampled_from([0.1, 0.2, 0.5, 0.9])),
                             st.sampled_from([False, True, None])), max_size=12)


@settings(max_examples=200, deadline=None)
@given(entries)
def test_the_ranking_puts_every_healthy_run_before_every_collapsed_one(items):
    ranked = label_free_ranking([{"name": str(i), "score": s, "collapse": c}
                                 for i, (s, c) in enumerate(items)])
    assert sorted(e["name"] for e in ranked) == sorted(str(i) for i in range(len(items)))
    scored = [e for e in ranked if e["score"] is not None]
    assert ranked[:len(scored)] == scored  # unscored last, without a rank
    assert all(e["rank"] is None for e in ranked[len(scored):])
    health = [bool(e["collapse"]) for e in scored]
    assert health == sorted(health)  # no collapsed run above a healthy one
    for a, b in zip(scored, scored[1:], strict=False):
        if bool(a["collapse"]) == bool(b["collapse"]):
            assert a["score"] >= b["score"]
            assert (a["rank"] == b["rank"]) == (a["score"] == b["score"])
        assert b["rank"] > a["rank"] or (b["rank"] == a["rank"] and b["score"] == a["score"])
    if scored:
        assert scored[0]["rank"] == 1


def test_a_collapsed_run_with_the_best_score_is_listed_after_the_healthy_ones():
    ranked = label_free_ranking([{"name": "collapsed", "score": 0.99, "collapse": True},
                                 {"name": "ok", "score": 0.10, "collapse": False},
                                 {"name": "better", "score": 0.40, "collapse": False}])
    assert [(e["name"], e["rank"]) for e in ranked] == [("better", 1), ("ok", 2),
                                                        ("collapsed", 3)]


def test_standings_rank_without_labels_and_measure_agreement_with_them():
    groups = {"a": [("a seed 0", _metrics(0.5)), ("a seed 1", _metrics(0.3))],
              "b": [("b seed 0", _metrics(0.9, flag=True)), ("b seed 1", _metrics(0.8))],
              "c": [("c seed 0", _metrics(None))]}
    st_ = standings(groups, validator="im")
    assert st_["agreement"] is None and st_["labelled_runs"] == 0
    g = st_["ranking"]["groups"]
    assert [(e["name"], e["rank"]) for e in g] == [("a", 1), ("b", 2), ("c", None)]
    assert g[0]["score"] == pytest.approx(0.4) and g[1]["flags"] == [True, False]
    assert g[2]["why"] == "too few"
    runs = st_["ranking"]["runs"]
    assert [e["name"] for e in runs] == ["b seed 1", "a seed 0", "a seed 1", "b seed 0",
                                         "c seed 0"]
    text = "\n".join(s for s, *_ in standings_tables(st_, what="method"))
    assert ranked_by("im") in text and "comes after every healthy one" in text

    accs = {"a seed 0": 0.6, "a seed 1": 0.7, "b seed 0": 0.2, "b seed 1": 0.9}
    labelled = {k: [(n, _metrics(m["label_free"]["validators"]["im"], acc=accs[n]))
                    for n, m in v] for k, v in groups.items() if k != "c"}
    st_ = standings(labelled, validator="im")
    assert st_["ranking"] is None and st_["labelled_runs"] == 4
    direct = validator_agreement([{"name": n, "validators": m["label_free"]["validators"],
                                   "target_accuracy": m["target"]["accuracy"]}
                                  for v in labelled.values() for n, m in v])
    assert st_["agreement"] == direct
    assert direct["validators"]["im"]["regret"] == pytest.approx(0.9 - 0.2)  # picks b seed 0
    assert agreement([("x", _metrics(0.1))]) is None  # no target labels: nothing to measure


def test_run_facts_of_an_evaluation_without_diagnostics():
    facts = run_facts({"target": {"accuracy": 0.5}})
    assert facts.score is None and facts.collapse is None and facts.target_accuracy == 0.5
    assert "no label-free diagnostics" in facts.skipped
    assert collapse_cell([None]) == "–" and collapse_cell([False, True, True]) == (
        "2 of 3 COLLAPSE?")


def test_compare_rows_carry_the_label_free_columns():
    runs = [{"data": "d", "method": "m", "seed": s, "metrics": _metrics(v, flag=f, sinkhorn=w)}
            for s, (v, f, w) in enumerate([(0.2, False, 3.0), (0.6, True, 5.0)])]
    row = summarize_compare(runs, validator="im")[0]
    assert row["validator"] == "im" and row["validator_per_seed"] == [0.2, 0.6]
    assert row["validator_mean"] == pytest.approx(0.4)
    assert row["validator_std"] == pytest.approx(np.std([0.2, 0.6], ddof=1))
    assert row["collapse_per_seed"] == [False, True] and row["collapsed_seeds"] == 1
    assert row["sinkhorn_mean"] == pytest.approx(4.0)
