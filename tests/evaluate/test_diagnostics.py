"""Label-free diagnostics of one run: the collapse rule, class balance, confidence, domain
distances (against literal or direct computations) and the layout of the dict."""

import json
import math

import numpy as np
import pytest
import torch

from sidda.alignment import DIAGNOSTIC_BLUR, fixed_blur_sinkhorn, gaussian_mmd2
from sidda.errors import InputError
from sidda.evaluate import (
    VALIDATORS,
    ValidatorInputs,
    collapse_check,
    domain_classifier,
    label_free_diagnostics,
)
from sidda.evaluate.label_free import soft_neighbourhood_density
from sidda.evaluate.validators import MAX_POINTS, subsample_indices


def _run(k, *, n_t=300, n_s=60, collapsed=False, shares=None, d=8, seed=0):
    """A run's arrays: target predictions drawn with ``shares`` (default balanced), or all one
    class when ``collapsed``; latents near the one-hot of the prediction."""
    rng = np.random.default_rng(seed)
    shares = np.full(k, 1 / k) if shares is None else np.asarray(shares)
    pred_t = np.zeros(n_t, int) if collapsed else rng.choice(k, n_t, p=shares)
    y_s = np.arange(n_s) % k
    logits_t = 4 * np.eye(k)[pred_t] + rng.normal(0, 0.3, (n_t, k))
    logits_s = 4 * np.eye(k)[y_s] + rng.normal(0, 0.3, (n_s, k))
    lat_t = np.eye(k, d)[pred_t] * 3 + rng.normal(0, 0.5, (n_t, d)) + 0.2
    lat_s = np.eye(k, d)[y_s] * 3 + rng.normal(0, 0.5, (n_s, d))
    return dict(logits_t=logits_t, latents_t=lat_t, latents_s=lat_s, logits_s=logits_s,
                labels_s=y_s, source_class_counts=np.full(k, 100))


# --------------------------------------------------------------------------- collapse rule


@pytest.mark.parametrize("k", [2, 3, 10])
def test_a_collapsed_run_raises_the_flag_and_a_healthy_one_does_not(k):
    collapsed = label_free_diagnostics(**_run(k, collapsed=True))["collapse"]
    assert collapsed["flag"] is True and collapsed["over_predicted"] == ["0"]
    assert collapsed["missing"] == [str(c) for c in range(1, k)]
    assert any("takes 100% of the target predictions" in r for r in collapsed["reasons"])
    # healthy, slightly imbalanced: the first class gets 1.3 x its share
    shares = np.full(k, 1.0)
    shares[0] = 1.3
    healthy = label_free_diagnostics(**_run(k, shares=shares / shares.sum()))["collapse"]
    assert healthy == {"flag": False, "reasons": [], "over_predicted": [], "missing": [],
                       "n": 300}


def test_the_rule_at_its_edges():
    third = [1 / 3] * 3
    # over-predicted: q >= max(2 s, s + 0.25) = 2/3 and >= 5 images above its share
    assert collapse_check([61, 15, 14], third)["over_predicted"] == ["0"]
    assert collapse_check([59, 16, 15], third)["over_predicted"] == []
    # K = 10, s = 0.1: the bound is s + 0.25 = 0.35
    assert collapse_check([36, 8, 8, 8, 7, 7, 7, 7, 6, 6], [0.1] * 10)["flag"] is True
    assert not collapse_check([34, 8, 8, 8, 7, 7, 7, 7, 7, 7], [0.1] * 10)["flag"]
    # never predicted, only where its share predicts >= 5 images
    missing = collapse_check([9, 7, 0], third)  # 16 images: s N = 5.3
    assert missing["missing"] == ["2"] and missing["flag"]
    assert not collapse_check([7, 7, 0], third)["flag"]  # 14 images: s N = 4.67
    # a tiny target set all in one class: too few images to tell
    small = collapse_check([6, 0, 0], third, class_names=["a", "b", "c"])
    assert small["flag"] is False
    big = collapse_check([30, 0, 0], third, class_names=["a", "b", "c"])
    assert big["over_predicted"] == ["a"] and big["missing"] == ["b", "c"]
    assert "class 'b' is never predicted on 30 target images" in big["reasons"][1]


def test_a_class_the_source_lacks_is_over_predicted_from_a_quarter():
    assert collapse_check([75, 25], [1.0, 0.0])["over_predicted"] == ["1"]
    assert collapse_check([80, 20], [1.0, 0.0])["flag"] is False


# --------------------------------------------------------------------------- the other fields


def test_fractions_and_confidence_match_numpy():
    run = _run(3, shares=[0.5, 0.3, 0.2])
    out = label_free_diagnostics(**run, class_names=["a", "b", "c"])
    pred = run["logits_t"].argmax(1)
    for c, name in enumerate("abc"):
        f = out["class_fractions"][name]
        assert f["target_predicted"] == pytest.approx(np.mean(pred == c))
        assert f["source_labels"] == pytest.approx(1 / 3)
        assert f["source_predicted"] == pytest.approx(
            np.mean(run["logits_s"].argmax(1) == c))
    for dom, logits in (("target", run["logits_t"]), ("source", run["logits_s"])):
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        assert out["mean_confidence"][dom] == pytest.approx(p.max(1).mean())
        assert out["mean_entropy"][dom] == pytest.approx(-(p * np.log(p)).sum(1).mean())
    assert out["n"] == {"target": 300, "source": 60}
    assert set(out["validators"]) == set(VALIDATORS) and out["validators_skipped"] == {}
    json.dumps(out, allow_nan=False)


def test_mmd_matches_a_literal_double_loop():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.7
    pooled = np.concatenate([x, y])
    dists = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(11) for j in range(i + 1, 11)]
    sigma = np.median(dists)

    def k(a, b):
        return math.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / (6 * 5)
    got = gaussian_mmd2(torch.from_numpy(x), torch.from_numpy(y))
    assert got.bandwidth == pytest.approx(sigma, rel=1e-12)
    assert got.mmd2 == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    with pytest.raises(ValueError, match=">= 2 points"):
        gaussian_mmd2(torch.from_numpy(x[:1]), torch.from_numpy(y))


def test_domain_distances_are_the_direct_computations():
    run = _run(3, n_t=90)
    dd = label_free_diagnostics(**run, validators=())["domain_distance"]
    z_s, z_t = torch.from_numpy(run["latents_s"]), torch.from_numpy(run["latents_t"])
    assert dd["sinkhorn_fixed_blur"] == pytest.approx(
        float(fixed_blur_sinkhorn(z_s.float(), z_t.float(), blur=DIAGNOSTIC_BLUR)), rel=1e-5)
    mmd = gaussian_mmd2(z_s, z_t)
    assert dd["mmd2"] == pytest.approx(mmd.mmd2) and dd["mmd_bandwidth"] == pytest.approx(
        mmd.bandwidth)
    fit = domain_classifier(z_s, z_t)
    assert dd["pad"] == pytest.approx(fit.proxy_a_distance())
    # balanced accuracy of "target where w > 1", recomputed from the fit's probabilities
    cut = 90 / (60 + 90)
    acc = 0.5 * (np.mean(fit.p_target_s <= cut) + np.mean(fit.p_target_t > cut))
    assert dd["domain_accuracy"] == pytest.approx(acc)
    assert dd["points"] == {"source": 60, "target": 90} and dd["skipped"] == {}


def test_pad_is_near_two_for_separate_domains_and_near_zero_for_one():
    rng = np.random.default_rng(8)
    z = torch.from_numpy(rng.normal(size=(200, 4)))
    far = domain_classifier(z[:100], z[100:] + 5)
    same = domain_classifier(z[:100], z[100:])
    assert far.proxy_a_distance() > 1.9 and same.proxy_a_distance() < 0.5


def test_pad_and_iwv_share_one_fit():
    run = _run(3, n_t=60)
    inputs = ValidatorInputs(run["latents_s"], run["logits_s"], run["labels_s"],
                             run["latents_t"], run["logits_t"])
    from sidda.evaluate import domain_distances, validator_report

    validator_report(inputs, ["iwv", "dev"])
    fit = inputs.domain_fit
    assert domain_distances(inputs)["pad"] == fit.proxy_a_distance()
    assert inputs.domain_fit is fit


def test_large_targets_are_subsampled_to_the_bound():
    run = _run(3, n_t=MAX_POINTS + 100, n_s=30, d=4)
    out = label_free_diagnostics(**run, validators=("snd", "knn"))
    assert out["domain_distance"]["points"] == {"source": 30, "target": MAX_POINTS}
    assert out["n"]["target"] == MAX_POINTS + 100 and out["validators"]["snd"] is not None
    # the subsample is the one of subsample_indices: SND of those rows, computed directly
    p = torch.softmax(torch.from_numpy(run["logits_t"]), 1)[subsample_indices(MAX_POINTS + 100)]
    assert out["validators"]["snd"] == pytest.approx(soft_neighbourhood_density(p))


def test_without_source_samples_the_distances_say_why():
    run = _run(3, n_t=30)
    run.update(latents_s=np.zeros((0, 8)), logits_s=np.zeros((0, 3)), labels_s=None)
    out = label_free_diagnostics(**run)
    assert out["domain_distance"]["pad"] is None
    assert out["domain_distance"]["skipped"]["mmd2"] == "no source samples"
    assert out["mean_confidence"]["source"] is None and out["validators"]["iwv"] is None
    assert out["collapse"]["flag"] is False
    json.dumps(out, allow_nan=False)


def test_nan_logits_give_none_not_a_crash():
    run = _run(3, n_t=30)
    run["logits_t"][0, 0] = np.nan
    out = label_free_diagnostics(**run)
    assert out["collapse"]["flag"] is None and "NaN" in out["collapse"]["reasons"][0]
    assert out["mean_confidence"]["target"] is None
    assert out["class_fractions"]["0"]["target_predicted"] is None
    assert out["validators"]["im"] is None
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize(("change", "match"), [
    (dict(source_class_counts=[1, 2]), "source_class_counts must hold 3"),
    (dict(source_class_counts=[0, 0, 0]), "positive sum"),
    (dict(source_class_counts=["a", "b", "c"]), "source_class_counts"),
    (dict(class_names=["a", "b"]), "class_names must be 3 distinct"),
    (dict(validators=["nope"]), "unknown validator 'nope'"),
    (dict(logits_t=np.zeros((0, 3)), latents_t=np.zeros((0, 8))), "no target samples"),
])
def test_bad_arguments_are_input_errors(change, match):
    with pytest.raises(InputError, match=match):
        label_free_diagnostics(**(_run(3, n_t=30) | change))
