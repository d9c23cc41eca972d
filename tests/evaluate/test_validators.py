"""Label-free validators: each against a hand or literal computation, their properties, the
registry and its refusals, and the checkpoint-selection rules built on them."""

import json
import math

import numpy as np
import pytest
import torch

from sidda.errors import InputError
from sidda.evaluate import (
    PICK_RULES,
    RULES,
    VALIDATORS,
    Predictions,
    ValidatorInputs,
    checkpoint_scores,
    domain_weights,
    importance_weighted_risk,
    select_checkpoints,
    validator_report,
    validator_scores,
)
from sidda.evaluate.label_free import (
    batch_nuclear_norm,
    class_ami,
    information_maximisation,
    knn_agreement,
    soft_neighbourhood_density,
)
from sidda.evaluate.validators import subsample_indices

NEW = ("snd", "im", "bnm", "class_ami", "knn")


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _h(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def _blobs(n_per, k, d, *, rng, spread=0.1, offset=0.0):
    """n_per points around each of k far-apart centres in d dims, and their blob ids."""
    centres = np.eye(k, d) * 10 + offset
    z = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centres])
    return torch.from_numpy(z), torch.arange(k).repeat_interleave(n_per)


def _inputs(n_s=30, n_t=30, k=3, d=6, seed=0, confident=True):
    """Source and target blobs (target shifted a little); logits point at the blob."""
    rng = np.random.default_rng(seed)
    z_s, y_s = _blobs(n_s // k, k, d, rng=rng)
    z_t, y_t = _blobs(n_t // k, k, d, rng=rng, offset=0.3)
    scale = 5.0 if confident else 0.0
    logits_s = scale * torch.nn.functional.one_hot(y_s, k).double() + 0.1 * torch.randn(len(y_s), k)
    logits_t = scale * torch.nn.functional.one_hot(y_t, k).double() + 0.1 * torch.randn(len(y_t), k)
    return ValidatorInputs(z_s, logits_s, y_s, z_t, logits_t)


# --------------------------------------------------------------------------- the formulas


def test_im_matches_a_literal_loop_and_a_hand_value():
    p = _softmax(np.random.default_rng(1).normal(size=(5, 3)) * 2)
    mean_p = [sum(p[i, k] for i in range(5)) / 5 for k in range(3)]
    expect = _h(mean_p) - sum(_h(p[i]) for i in range(5)) / 5
    assert information_maximisation(torch.from_numpy(p)) == pytest.approx(expect, rel=1e-12)
    # two confident, distinct predictions: H(mean) = ln 2, mean H = 0
    assert information_maximisation(torch.eye(2)) == pytest.approx(math.log(2))
    assert information_maximisation(torch.full((4, 3), 1 / 3)) == pytest.approx(0, abs=1e-12)


def test_snd_matches_a_literal_loop_of_the_paper_definition():
    p = _softmax(np.random.default_rng(2).normal(size=(6, 4)) * 3)
    u = p / np.linalg.norm(p, axis=1, keepdims=True)
    ents = []
    for i in range(6):
        sims = [float(u[i] @ u[j]) / 0.05 for j in range(6) if j != i]
        m = max(sims)
        e = [math.exp(s - m) for s in sims]
        ents.append(_h([x / sum(e) for x in e]))
    assert soft_neighbourhood_density(torch.from_numpy(p)) == pytest.approx(np.mean(ents),
                                                                            rel=1e-12)
    # by hand: rows e0, e0, e1. Row 3 is equally far from both others (entropy ln 2); each twin
    # sees the other at similarity 1/T = 20 and row 3 at 0 (entropy of (1, e^-20), ~4e-8).
    assert soft_neighbourhood_density(torch.eye(3)[[0, 0, 1]]) == pytest.approx(
        math.log(2) / 3, abs=1e-6)


def test_bnm_matches_numpys_svd_and_its_bound():
    p = _softmax(np.random.default_rng(3).normal(size=(5, 3)))
    expect = np.linalg.svd(p, compute_uv=False).sum() / math.sqrt(5 * 3)
    assert batch_nuclear_norm(torch.from_numpy(p)) == pytest.approx(expect, rel=1e-12)
    one_hot_diverse = torch.eye(3)[[0, 1, 2, 0, 1, 2]]  # (6, 3): singular values sqrt(2) x 3
    assert batch_nuclear_norm(one_hot_diverse) == pytest.approx(1.0)
    collapsed = torch.eye(3)[[0] * 6]  # rank one, singular value sqrt(6)
    assert batch_nuclear_norm(collapsed) == pytest.approx(math.sqrt(6) / math.sqrt(18))
    assert batch_nuclear_norm(torch.from_numpy(p)) < 1.0


def test_knn_agreement_matches_a_literal_vote_with_ties_to_the_nearer():
    rng = np.random.default_rng(4)
    z_s, y_s = rng.normal(size=(12, 2)), rng.integers(0, 3, 12)
    z_t, pred = rng.normal(size=(6, 2)), rng.integers(0, 3, 6)
    for k in (1, 2, 4, 5):
        agree = []
        for i in range(6):
            order = sorted(range(12), key=lambda j: np.linalg.norm(z_t[i] - z_s[j]))[:k]
            counts = {c: sum(y_s[j] == c for j in order) for c in set(y_s[order])}
            top = max(counts.values())
            vote = next(y_s[j] for j in order if counts[y_s[j]] == top)  # nearest of the tied
            agree.append(vote == pred[i])
        got = knn_agreement(torch.from_numpy(z_t), torch.from_numpy(pred), torch.from_numpy(z_s),
                            torch.from_numpy(y_s), k=k)
        assert got == pytest.approx(np.mean(agree)), k
    # a 1-1 tie: the label of the nearest neighbour wins
    z_s = torch.tensor([[0.0], [1.0]])
    assert knn_agreement(torch.tensor([[0.4]]), torch.tensor([1]), z_s, torch.tensor([1, 0]),
                         k=2) == 1.0


def test_class_ami_is_one_on_clean_clusters_and_tracks_disagreement():
    from sklearn.metrics import adjusted_mutual_info_score

    rng = np.random.default_rng(5)
    z, blob = _blobs(10, 3, 4, rng=rng)
    assert class_ami(z, blob, num_classes=3) == pytest.approx(1.0)
    assert class_ami(z, (blob + 1) % 3, num_classes=3) == pytest.approx(1.0)  # names don't matter
    # 4 predictions moved to another class: K-means still finds the blobs, so the score is the
    # AMI between the predictions and the blobs, computed here directly by sklearn
    pred = blob.clone()
    pred[[0, 1, 12, 25]] = torch.tensor([1, 2, 0, 1])
    assert class_ami(z, pred, num_classes=3) == pytest.approx(
        adjusted_mutual_info_score(pred.numpy(), blob.numpy()))
    assert class_ami(z, torch.zeros(30, dtype=torch.long), num_classes=3) == 0.0  # collapsed
    # a class never predicted still gets a cluster (started at the farthest point)
    two = torch.where(blob == 2, torch.tensor(1), blob)
    assert 0 < class_ami(z, two, num_classes=3) < 1


# --------------------------------------------------------------------------- the family


def test_every_validator_has_a_one_line_description():
    assert list(VALIDATORS)[:3] == ["entropy", "im", "snd"]
    for name, v in VALIDATORS.items():
        assert v.name == name and v.description
        assert "\n" not in v.description


def test_scores_on_a_labelled_example_match_independent_computations():
    inputs = _inputs()
    scores = validator_scores(inputs)
    assert list(scores) == list(VALIDATORS) and all(v is not None for v in scores.values())
    p_t = _softmax(inputs.logits_t.numpy())
    assert scores["entropy"] == pytest.approx(-np.mean([_h(r) for r in p_t]))
    assert scores["source_acc"] == pytest.approx(
        np.mean(inputs.logits_s.numpy().argmax(1) == inputs.labels_s.numpy()))
    p_s = _softmax(inputs.logits_s.numpy())
    ce = -np.log(p_s[np.arange(len(p_s)), inputs.labels_s.numpy()])
    est = importance_weighted_risk(ce, domain_weights(inputs.latents_s, inputs.latents_t))
    assert scores["iwv"] == pytest.approx(-est.iwv) and scores["dev"] == pytest.approx(-est.dev)
    assert scores["knn"] == 1.0 and scores["class_ami"] == pytest.approx(1.0)
    json.dumps(scores, allow_nan=False)


def test_confident_separated_predictions_beat_uniform_ones():
    good, flat = validator_scores(_inputs()), validator_scores(_inputs(confident=False))
    for name in ("im", "bnm", "entropy"):
        assert good[name] > flat[name], name
    collapsed = _inputs()
    collapsed = ValidatorInputs(collapsed.latents_s, collapsed.logits_s, collapsed.labels_s,
                                collapsed.latents_t, torch.tensor([[9.0, 0, 0]]).repeat(30, 1))
    bad = validator_scores(collapsed)
    for name in ("im", "bnm", "class_ami", "knn"):  # confident, but everything in one class
        assert good[name] > bad[name], name


def test_snd_rewards_dense_neighbourhoods_and_peaks_when_all_predictions_agree():
    y = torch.arange(60) % 3
    grouped = torch.softmax(5 * torch.eye(3, dtype=torch.float64)[y]
                            + 0.3 * torch.randn(60, 3, dtype=torch.float64), 1)
    scattered = torch.softmax(3 * torch.randn(60, 3, dtype=torch.float64), 1)
    assert soft_neighbourhood_density(grouped) > soft_neighbourhood_density(scattered) + 0.1
    # its known weak spot: identical predictions (uniform, or all one class) give the largest
    # value, log(N - 1), so SND must be read next to the collapse flag
    for same in (torch.full((60, 3), 1 / 3), torch.eye(3)[[0] * 60]):
        assert soft_neighbourhood_density(same) == pytest.approx(math.log(59))
    assert soft_neighbourhood_density(grouped) < math.log(59)


def test_unknown_validator_names_are_refused_with_the_list():
    with pytest.raises(InputError, match="unknown validator 'sndd'; choose from entropy, im"):
        validator_scores(_inputs(), ["sndd"])


def test_a_target_smaller_than_the_classes_gives_none_with_a_reason():
    rng = np.random.default_rng(6)
    inputs = ValidatorInputs(torch.randn(20, 4), torch.randn(20, 5), torch.arange(20) % 5,
                             torch.from_numpy(rng.normal(size=(3, 4))), torch.randn(3, 5))
    rep = validator_report(inputs)
    for name in NEW:
        assert rep["scores"][name] is None
        assert "3 target images for 5 classes" in rep["skipped"][name]
    assert rep["scores"]["entropy"] is not None and rep["scores"]["iwv"] is not None
    assert set(rep["skipped"]) == set(NEW)


def test_without_source_labels_or_with_nan_the_readers_are_skipped():
    base = _inputs()
    no_labels = ValidatorInputs(base.latents_s, base.logits_s, None, base.latents_t,
                                base.logits_t)
    rep = validator_report(no_labels)
    for name in ("knn", "iwv", "dev", "source_acc"):
        assert rep["scores"][name] is None and "labelled source" in rep["skipped"][name]
    assert rep["scores"]["snd"] is not None
    nan_t = base.logits_t.clone()
    nan_t[0, 0] = float("nan")
    rep = validator_report(ValidatorInputs(base.latents_s, base.logits_s, base.labels_s,
                                           base.latents_t, nan_t))
    assert rep["scores"]["im"] is None and "logits_t holds NaN" in rep["skipped"]["im"]
    assert rep["scores"]["source_acc"] is not None  # reads no target logit


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(logits_t=torch.zeros(0, 3)), "no target samples"),
    (dict(logits_t=torch.zeros(4, 1), latents_t=torch.zeros(4, 2)), ">= 2 classes"),
    (dict(latents_t=torch.zeros(5, 2)), "latents_t has 5 rows"),
    (dict(logits_s=torch.zeros(3, 4)), "logits_s has 4 classes"),
    (dict(latents_s=torch.zeros(3, 7)), "latents_s has 7 features"),
    (dict(labels_s=torch.tensor([0, 1, 3])), r"labels_s must lie in 0\.\.2"),
    (dict(labels_s=torch.tensor([0.0, 1.0, 2.0])), "labels_s must be integers"),
    (dict(logits_t=torch.zeros(4)), "must be 2-D"),
])
def test_inconsistent_inputs_are_input_errors(kwargs, match):
    args = dict(latents_s=torch.zeros(3, 2), logits_s=torch.zeros(3, 3),
                labels_s=torch.tensor([0, 1, 2]), latents_t=torch.zeros(4, 2),
                logits_t=torch.zeros(4, 3))
    with pytest.raises(InputError, match=match):
        ValidatorInputs(**(args | kwargs))


def test_arrays_are_accepted_and_the_domain_fit_is_made_once():
    base = _inputs()
    inputs = ValidatorInputs(base.latents_s.numpy(), base.logits_s.numpy(),
                             base.labels_s.numpy(), base.latents_t.numpy(),
                             base.logits_t.numpy())
    fit = inputs.domain_fit
    rep = validator_report(inputs, ["iwv", "dev"])
    assert inputs.domain_fit is fit  # iwv and dev read the cached fit
    assert rep["scores"] == {k: validator_scores(base, [k])[k] for k in ("iwv", "dev")}


def test_subsamples_are_fixed_and_bounded():
    a, b = subsample_indices(5000, max_points=100), subsample_indices(5000, max_points=100)
    assert torch.equal(a, b) and len(torch.unique(a)) == 100 and bool((a[1:] > a[:-1]).all())
    assert not torch.equal(a, subsample_indices(5000, max_points=100, seed=1))


# --------------------------------------------------------------------------- selection rules


def test_every_validator_is_a_selection_rule_and_a_checkpoint_name():
    assert PICK_RULES == tuple(VALIDATORS)
    for name in VALIDATORS:
        key, mode = RULES[name]
        assert (key, mode) == (f"validators.{name}", "max")  # higher is better, every one
    from sidda.cli.parser import checkpoint_arg
    assert checkpoint_arg("snd") == "snd" and checkpoint_arg("class_ami") == "class_ami"


def test_checkpoint_scores_hold_each_validator_once():
    base = _inputs()
    val_s = Predictions(base.logits_s.float(), base.latents_s.float(), base.labels_s)
    val_t = Predictions(base.logits_t.float(), base.latents_t.float(), torch.zeros(30).long())
    scores = checkpoint_scores(val_s=val_s, val_t=val_t, record={"epoch": 3})
    v = scores["validators"]
    assert set(v) == set(VALIDATORS) and "validators_skipped" not in scores
    assert not {"target_val_entropy", "iwv_risk", "dev_risk"} & set(scores)  # no copies
    # the target labels given to val_t (all 0, wrong) change nothing: they are never read
    relabelled = Predictions(val_t.logits, val_t.latents, None)
    assert checkpoint_scores(val_s=val_s, val_t=relabelled, record={"epoch": 3}) == scores
    json.dumps(scores, allow_nan=False)


def test_select_checkpoints_picks_the_highest_validator_score():
    def cand(snd, ent, acc):
        return {"val_acc_s": 0.9, "val_total": 1.0,
                "validators": {"snd": snd, "entropy": -ent, "im": None},
                "target_accuracy": acc}

    cands = {"final": cand(0.2, 0.5, 0.6), "best_val_acc": cand(0.9, 0.4, 0.7),
             "epoch_0002": cand(0.9, 0.1, 0.8)}
    rules = select_checkpoints(cands)["rules"]
    assert rules["snd"]["checkpoint"] == "best_val_acc"  # tie: the first
    assert rules["snd"]["regret"] == pytest.approx(0.1)
    assert rules["entropy"]["checkpoint"] == "epoch_0002"
    assert "im" not in rules and "bnm" not in rules  # missing scores: no pick
