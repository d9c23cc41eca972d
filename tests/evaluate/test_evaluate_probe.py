"""The authors' probe protocol (sidda.evaluate.paper_probe_calibration), cross-fitted."""

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from sidda.evaluate import ProbeResult, paper_probe_calibration
from sidda.metrics import paper_ece


def ref_paper_brier(p, y):
    """The authors' code: mean over classes of one-vs-rest Brier (sklearn brier_score_loss)."""
    return np.mean([skm.brier_score_loss(y == k, p[:, k]) for k in range(p.shape[1])])


@pytest.fixture
def single_threaded_blas():
    # the probe fits many tiny logistic regressions; multi-threaded BLAS only adds overhead
    with threadpool_limits(limits=1):
        yield


def make_latents(n, d, shift, rng):
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, 0] += shift * (2 * y - 1)
    return x, y


@pytest.mark.usefixtures("single_threaded_blas")
def test_probe_on_separable_latents_is_accurate():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    x = rng.normal(size=(90, 8)) + 4 * np.eye(3, 8)[y]  # (90, 8), well separated
    res = paper_probe_calibration(x, y, n_splits=5, random_state=0)
    assert isinstance(res, ProbeResult)
    assert res.probs.shape == (90, 3)
    torch.testing.assert_close(res.probs.sum(dim=1), torch.ones(90, dtype=torch.float64))
    assert res.accuracy.item() > 0.95
    assert res.ece_paper.item() == pytest.approx(paper_ece(res.probs, torch.from_numpy(y)).item())
    assert res.brier_paper.item() == pytest.approx(ref_paper_brier(res.probs.numpy(), y))
    again = paper_probe_calibration(x, y, n_splits=5, random_state=0)
    torch.testing.assert_close(again.probs, res.probs)  # deterministic


@pytest.mark.usefixtures("single_threaded_blas")
def test_probe_with_random_labels_stays_near_chance():
    accs = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(400, 10)), rng.integers(0, 2, 400)  # labels independent of x
        accs.append(paper_probe_calibration(x, y).accuracy.item())
    assert max(accs) < 0.6 and abs(np.mean(accs) - 0.5) < 0.05


@pytest.mark.usefixtures("single_threaded_blas")
def test_probe_is_cross_fitted_not_in_sample():
    # weak signal + many noise dimensions: the authors' in-sample protocol overfits, the
    # cross-fitted one tracks the accuracy of the same probe on fresh samples
    rng = np.random.default_rng(0)
    x, y = make_latents(200, 80, 0.8, rng)
    x_fresh, y_fresh = make_latents(4000, 80, 0.8, rng)
    probe = CalibratedClassifierCV(estimator=LogisticRegression(max_iter=1000), method="sigmoid")
    probe.fit(x, y)
    in_sample = (probe.predict(x) == y).mean()
    fresh = (probe.predict(x_fresh) == y_fresh).mean()
    cross_fitted = paper_probe_calibration(x, y).accuracy.item()
    assert in_sample > fresh + 0.15
    assert abs(cross_fitted - fresh) < 0.08


def test_probe_bad_inputs_raise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    with pytest.raises(ValueError, match="n_splits must be an integer >= 2"):
        paper_probe_calibration(x, np.arange(12) % 2, n_splits=1)
    with pytest.raises(ValueError, match="class counts"):
        paper_probe_calibration(x, np.r_[np.zeros(10, int), np.ones(2, int)])
    with pytest.raises(ValueError, match="inner 5-fold Platt calibration"):
        paper_probe_calibration(x, np.arange(12) % 2, n_splits=5)
    with pytest.raises(ValueError, match=r"shape \(12,\)"):
        paper_probe_calibration(x, np.arange(10) % 2)
