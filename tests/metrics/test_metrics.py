"""Tests for sidda.metrics: literal NumPy loops, known answers, sklearn references, properties."""

import json
import math

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sidda.metrics import (
    ReliabilityBins,
    accuracy,
    apply_temperature,
    brier_score,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    paper_brier,
    paper_ece,
    reliability_bins,
    temperature_nll,
)


def random_probs(n, k, seed, sharpness=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = sharpness * torch.randn(n, k, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    return torch.softmax(logits, dim=1), labels


# ------------------------------------------------------------------ literal NumPy references


def ref_accuracy(p, y):
    return sum(int(np.argmax(p[i]) == y[i]) for i in range(len(y))) / len(y)


def ref_bins(p, y, n_bins):
    """Per-bin loop: bin b holds the samples with b/n < conf <= (b+1)/n."""
    conf = [max(p[i]) for i in range(len(y))]
    corr = [float(np.argmax(p[i]) == y[i]) for i in range(len(y))]
    counts, confs, accs = [], [], []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(y)) if lo < conf[i] <= hi or (b == 0 and conf[i] == 0)]
        counts.append(len(members))
        confs.append(sum(conf[i] for i in members) / len(members) if members else math.nan)
        accs.append(sum(corr[i] for i in members) / len(members) if members else math.nan)
    return counts, confs, accs


def ref_ece(p, y, n_bins):
    counts, confs, accs = ref_bins(p, y, n_bins)
    return sum(
        c / len(y) * abs(a - f) for c, f, a in zip(counts, confs, accs, strict=True) if c > 0
    )


def ref_brier(p, y):
    total = 0.0
    for i in range(len(y)):
        for k in range(p.shape[1]):
            total += (p[i, k] - (1.0 if k == y[i] else 0.0)) ** 2
    return total / len(y)


def ref_nll(p, y):
    return -sum(math.log(p[i, y[i]]) for i in range(len(y))) / len(y)


def ref_paper_ece(p, y):
    return sum(abs(max(p[i]) - float(np.argmax(p[i]) == y[i])) for i in range(len(y))) / len(y)


def ref_paper_brier(p, y):
    """The authors' code: mean over classes of one-vs-rest Brier (sklearn brier_score_loss)."""
    return np.mean([skm.brier_score_loss(y == k, p[:, k]) for k in range(p.shape[1])])


# ------------------------------------------------------------------ against reference loops


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_calibration_metrics_match_numpy_loops(seed, n_bins):
    probs, labels = random_probs(200, 4, seed)
    p, y = probs.numpy(), labels.numpy()
    assert accuracy(probs, labels).item() == pytest.approx(ref_accuracy(p, y), abs=1e-12)
    ece = expected_calibration_error(probs, labels, n_bins=n_bins).item()
    assert ece == pytest.approx(ref_ece(p, y, n_bins), abs=1e-12)
    bins = reliability_bins(probs, labels, n_bins=n_bins)
    counts, confs, accs = ref_bins(p, y, n_bins)
    assert bins.counts.tolist() == counts
    np.testing.assert_allclose(bins.confidence.numpy(), confs, atol=1e-12)  # NaN == NaN
    np.testing.assert_allclose(bins.accuracy.numpy(), accs, atol=1e-12)
    assert brier_score(probs, labels).item() == pytest.approx(ref_brier(p, y), abs=1e-12)
    assert negative_log_likelihood(probs, labels).item() == pytest.approx(ref_nll(p, y), abs=1e-12)
    assert paper_ece(probs, labels).item() == pytest.approx(ref_paper_ece(p, y), abs=1e-12)
    assert paper_brier(probs, labels).item() == pytest.approx(ref_paper_brier(p, y), abs=1e-12)


def test_reliability_bins_fields_and_ece_consistency():
    probs, labels = random_probs(300, 3, seed=5)
    bins = reliability_bins(probs, labels, n_bins=15)
    assert isinstance(bins, ReliabilityBins)
    assert bins.edges.shape == (16,) and bins.confidence.shape == (15,)
    assert bins.counts.dtype == torch.int64 and int(bins.counts.sum()) == 300
    np.testing.assert_allclose(bins.edges.numpy(), np.arange(16) / 15, atol=0)
    full = bins.counts > 0
    weights = bins.counts[full].double() / 300
    from_bins = (weights * (bins.accuracy[full] - bins.confidence[full]).abs()).sum().item()
    assert expected_calibration_error(probs, labels).item() == pytest.approx(from_bins, abs=1e-12)
    assert torch.isnan(bins.confidence[~full]).all() and torch.isnan(bins.accuracy[~full]).all()


def test_bins_are_right_closed_at_exact_edges():
    # confidences exactly on edges 0.5 and 1.0 belong to the bin that ends there
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]], dtype=torch.float64)
    bins = reliability_bins(probs, torch.tensor([0, 0, 0]), n_bins=4)  # edges 0, .25, .5, .75, 1
    assert bins.counts.tolist() == [0, 1, 1, 1]


# ------------------------------------------------------------------ known answers


def test_ece_is_zero_for_perfectly_calibrated_set():
    # bin (0.7, 0.8]: 4 samples at conf 0.75, 3 correct; bin (0.6, 0.7]: 5 at conf 0.6, 3 correct
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.4, 0.6]] * 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1] + [1, 1, 1, 0, 0])
    assert expected_calibration_error(probs, labels, n_bins=10).item() == pytest.approx(
        0, abs=1e-15
    )
    # the authors' "ECE" is not zero for the same set: (4*0.375 + 5*0.48) / 9
    assert paper_ece(probs, labels).item() == pytest.approx((4 * 0.375 + 5 * 0.48) / 9)


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_of_one_hot_predictions_is_error_rate(n_bins):
    preds = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1])
    labels = torch.tensor([0, 1, 2, 0, 0, 0, 1, 1])
    probs = torch.nn.functional.one_hot(preds, 3).double()  # all confidence 1 -> last bin
    acc = (preds == labels).double().mean().item()
    assert expected_calibration_error(probs, labels, n_bins=n_bins).item() == pytest.approx(1 - acc)
    assert paper_ece(probs, labels).item() == pytest.approx(1 - acc)


def test_brier_known_values():
    onehot = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    assert brier_score(onehot, labels).item() == 0.0
    assert brier_score(onehot, labels.roll(1)).item() == pytest.approx(2.0)
    assert paper_brier(onehot, labels.roll(1)).item() == pytest.approx(2.0 / 3)
    uniform = torch.full((4, 4), 0.25)
    assert brier_score(uniform, torch.tensor([0, 1, 2, 3])).item() == pytest.approx(0.75)
    per_sample = brier_score(onehot, torch.tensor([0, 2, 2]), reduction="none")
    assert per_sample.tolist() == pytest.approx([0.0, 2.0, 0.0])


def test_nll_known_values_and_eps_floor():
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    expected = -(math.log(0.5) + math.log(0.75)) / 2
    assert negative_log_likelihood(probs, torch.tensor([0, 1])).item() == pytest.approx(expected)
    zero = negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), eps=1e-6)
    assert zero.item() == pytest.approx(-math.log(1e-6))


@pytest.mark.parametrize("k", [2, 5, 10])
def test_paper_brier_is_brier_over_k(k):
    probs, labels = random_probs(50, k, seed=k)
    assert paper_brier(probs, labels).item() == pytest.approx(brier_score(probs, labels).item() / k)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 6),
    n_bins=st.integers(1, 20),
    sharpness=st.floats(0.0, 8.0),
    seed=st.integers(0, 2**16),
)
def test_paper_ece_upper_bounds_standard_ece(n, k, n_bins, sharpness, seed):
    probs, labels = random_probs(n, k, seed, sharpness)
    ece = expected_calibration_error(probs, labels, n_bins=n_bins).item()
    assert 0.0 <= ece <= paper_ece(probs, labels).item() + 1e-12


def test_dtype_and_numpy_inputs():
    probs32, labels = random_probs(20, 3, seed=0)
    probs32 = probs32.float()
    assert expected_calibration_error(probs32, labels).dtype == torch.float32
    assert accuracy(probs32, labels).shape == ()
    from_numpy = brier_score(probs32.numpy(), labels.numpy())
    assert from_numpy.item() == pytest.approx(brier_score(probs32, labels).item())


# ------------------------------------------------------------------ classification vs sklearn


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_matrix_and_report_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 5
    labels = rng.integers(0, k - 1, 60)  # class 4 never true
    preds = np.where(rng.random(60) < 0.6, labels, rng.integers(0, k, 60))
    preds[preds == 3] = 2  # class 3 never predicted -> zero division
    cm = confusion_matrix(torch.from_numpy(preds), torch.from_numpy(labels), num_classes=k)
    assert cm.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), skm.confusion_matrix(labels, preds, labels=range(k)))
    ours = classification_report(preds, labels, num_classes=k)
    ref = skm.classification_report(
        labels, preds, labels=list(range(k)), output_dict=True, zero_division=0.0
    )
    assert set(ours) == set(ref)
    for key, value in ref.items():
        if isinstance(value, dict):
            assert ours[key] == pytest.approx(value, abs=1e-12), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12)
    assert json.loads(json.dumps(ours)) == ours


def test_report_class_names_and_scores_input():
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    r = classification_report(
        scores, torch.tensor([0, 0, 1]), num_classes=2, class_names=["a", "b"]
    )
    assert r["a"]["support"] == 2 and r["b"]["precision"] == 0.5 and r["accuracy"] == 2 / 3
    assert all(type(v) is float for v in r["macro avg"].values() if not isinstance(v, int))


# ------------------------------------------------------------------ temperature scaling


def test_fit_temperature_recovers_known_temperature():
    g = torch.Generator().manual_seed(0)
    z = 1.5 * torch.randn(20000, 5, generator=g, dtype=torch.float64)  # calibrated logits
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    t = fit_temperature(3 * z, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    torch.testing.assert_close(apply_temperature(3 * z, t), torch.softmax(3 * z / t, dim=1))


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_temperature_scaling_never_increases_nll(scale, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(300, 4, generator=g)
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    logits = scale * z
    t = fit_temperature(logits, labels)
    before = negative_log_likelihood(torch.softmax(logits.double(), dim=1), labels).item()
    after = negative_log_likelihood(apply_temperature(logits.double(), t), labels).item()
    assert after <= before + 1e-12


def test_fit_temperature_warns_at_bound_for_separable_logits():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]] * 10)
    with pytest.warns(RuntimeWarning, match="search bound"):
        t = fit_temperature(logits, torch.tensor([0, 1] * 10))
    assert t == pytest.approx(0.05, rel=0.01)


def test_apply_temperature_one_is_softmax():
    logits = torch.randn(7, 3)
    torch.testing.assert_close(apply_temperature(logits, 1.0), torch.softmax(logits, dim=1))


def test_temperature_nll_is_the_loop_over_log_softmax():
    g = torch.Generator().manual_seed(3)
    z = 4 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=g)
    for t in (0.5, 1.0, 2.0):
        zt = z.numpy() / t
        ref = np.mean([np.log(np.exp(r - r.max()).sum()) + r.max() - r[k]
                       for r, k in zip(zt, y.numpy(), strict=True)])
        assert temperature_nll(z, y, t).item() == pytest.approx(ref, abs=1e-12)
    # float32 logits give a float32 value; huge logits stay finite (no softmax then log)
    assert temperature_nll(z.float(), y).dtype == torch.float32
    far = torch.tensor([[1000.0, -1000.0]])
    assert temperature_nll(far, torch.tensor([1])).item() == pytest.approx(2000.0)
    assert temperature_nll(torch.zeros(1, 2), torch.tensor([0]), 2.0).item() == \
        pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        temperature_nll(z, y, -1.0)


def test_fit_temperature_minimises_temperature_nll():
    g = torch.Generator().manual_seed(4)
    z = 3 * torch.randn(500, 4, generator=g)
    y = torch.multinomial(torch.softmax(z / 3, dim=1), 1, generator=g).squeeze(1)
    t = fit_temperature(z, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 300))
    best = min(temperature_nll(z.double(), y, float(s)).item() for s in grid)
    assert temperature_nll(z.double(), y, t).item() <= best + 1e-6


# ------------------------------------------------------------------ validation at the boundary


GOOD_P = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
GOOD_Y = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (torch.tensor([0.7, 0.3]), GOOD_Y[:1], r"shape \(N, K\)"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), r"N >= 1"),
        (torch.tensor([[2.0, -1.0], [0.0, 1.0]]), GOOD_Y, "softmax"),
        (torch.tensor([[0.5, 0.4], [0.2, 0.8]]), GOOD_Y, "rows summing to 1"),
        (torch.tensor([[math.nan, 1.0], [0.2, 0.8]]), GOOD_Y, "NaN or inf"),
        (torch.tensor([[1, 0], [0, 1]]), GOOD_Y, "floating"),
        (GOOD_P, torch.tensor([0.0, 1.0]), "integer class indices"),
        (GOOD_P, torch.tensor([0, 1, 1]), r"shape \(2,\)"),
        (GOOD_P, torch.tensor([[1, 0], [0, 1]]), "not one-hot"),
        (GOOD_P, torch.tensor([0, 2]), r"0\.\.1"),
        (GOOD_P, torch.tensor([-1, 0]), r"0\.\.1"),
    ],
)
@pytest.mark.parametrize(
    "metric", [expected_calibration_error, brier_score, negative_log_likelihood, paper_ece]
)
def test_bad_probs_and_labels_raise(metric, probs, labels, match):
    with pytest.raises(ValueError, match=match):
        metric(probs, labels)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1, got 0"):
        expected_calibration_error(GOOD_P, GOOD_Y, n_bins=0)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(GOOD_P, GOOD_Y, n_bins=2.5)
    with pytest.raises(ValueError, match='reduction must be "mean" or "none"'):
        brier_score(GOOD_P, GOOD_Y, reduction="sum")
    with pytest.raises(ValueError, match="eps"):
        negative_log_likelihood(GOOD_P, GOOD_Y, eps=0.0)
    with pytest.raises(ValueError, match="num_classes=3"):
        confusion_matrix(GOOD_P, GOOD_Y, num_classes=3)
    with pytest.raises(ValueError, match="preds must lie in 0..1"):
        confusion_matrix(torch.tensor([0, 2]), GOOD_Y, num_classes=2)
    with pytest.raises(ValueError, match="class_names must be 2 unique names"):
        classification_report(GOOD_Y, GOOD_Y, num_classes=2, class_names=["a", "a"])
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        apply_temperature(GOOD_P, 0.0)
    with pytest.raises(ValueError, match="max_iter"):
        fit_temperature(GOOD_P, GOOD_Y, max_iter=0)
    with pytest.raises(ValueError, match="numeric NumPy array"):
        accuracy("not an array", GOOD_Y)
