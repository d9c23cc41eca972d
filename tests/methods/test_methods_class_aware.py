"""Class-aware SIDDA (``loss.label_cost``): the divergence of latents that carry their class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from geomloss import SamplesLoss
from torch.nn import functional as F

from sidda import LossConfig
from sidda.methods import StepOutputs
from sidda.methods.sidda import ROBUST_BLUR_FACTOR, SIDDAMethod


def _outputs(seed=0, b_s=10, b_t=8, d=5, k=3):
    g = torch.Generator().manual_seed(seed)
    return StepOutputs(
        z_s=torch.randn(b_s, d, generator=g, dtype=torch.float64).float().requires_grad_(),
        z_t=(torch.randn(b_t, d, generator=g) + 1.0).requires_grad_(),
        logits_s=torch.randn(b_s, k, generator=g).requires_grad_(),
        logits_t=torch.randn(b_t, k, generator=g).requires_grad_(),
        y_s=torch.randint(0, k, (b_s,), generator=g),
        progress=0.5,
    )


@pytest.mark.parametrize("label_cost", [0.5, 1.0, 2.0])
def test_class_aware_term_is_geomloss_on_points_with_their_class(label_cost):
    out = _outputs()
    method = SIDDAMethod(variant="robust", label_cost=label_cost)
    da, blur, max_distance = method.class_aware_alignment(out)
    # the reference: geomloss in float64 on the augmented points, built here by hand
    z_s, z_t = out.z_s.detach().double(), out.z_t.detach().double()
    big_d = float(torch.cdist(z_s, z_t).max())
    c = label_cost * big_d / math.sqrt(2)
    a = torch.cat([z_s, c * F.one_hot(out.y_s, 3).double()], 1)
    b = torch.cat([z_t, c * out.logits_t.detach().double().softmax(1)], 1)
    ref = SamplesLoss("sinkhorn", p=2, blur=ROBUST_BLUR_FACTOR * big_d, scaling=0.9,
                      debias=True, backend="tensorized")(a, b)
    assert max_distance == pytest.approx(big_d, rel=1e-5)
    assert blur == pytest.approx(ROBUST_BLUR_FACTOR * big_d, rel=1e-5)
    assert float(da.detach()) == pytest.approx(float(ref), rel=2e-3, abs=1e-4)


def test_label_coordinates_separate_classes_that_the_latents_do_not():
    """Two target points on top of two source points, with their classes swapped: the plain
    divergence is about 0, the class-aware one is not; with matching classes both are ~0."""
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([0, 1])
    right = torch.tensor([[20.0, 0.0], [0.0, 20.0]])  # confident, classes 0 and 1
    method = SIDDAMethod(variant="robust", label_cost=1.0)

    def da(logits_t):
        return float(method.class_aware_alignment(StepOutputs(
            z_s=z, z_t=z.clone(), logits_s=torch.zeros(2, 2), logits_t=logits_t, y_s=y))[0])

    assert da(right) < 1e-3
    assert da(right.flip(0)) > 0.5  # the latents match, the classes do not
    assert float(method.loss.sinkhorn(z, z.clone())) < 1e-3


def test_gradient_reaches_the_target_classifier_and_off_means_the_paper_term():
    out = _outputs(seed=1)
    res = SIDDAMethod(variant="robust", label_cost=1.0)(out)
    res.total.backward()
    assert out.logits_t.grad is not None and float(out.logits_t.grad.abs().sum()) > 0
    off = SIDDAMethod(variant="robust", label_cost=0.0)  # latents only: the Sinkhorn term
    out0 = _outputs(seed=1)
    assert float(off(out0).da) == float(off.loss.sinkhorn(out0.z_s, out0.z_t))
    assert SIDDAMethod(variant="robust").label_cost == 0.5  # the robust default
    assert SIDDAMethod(variant="paper").label_cost == 0.0


def test_alignment_for_validation_reads_the_classes_and_moves_no_eta():
    method = SIDDAMethod(variant="robust", label_cost=1.0)
    etas = [p.detach().clone() for p in method.parameters()]
    out = _outputs(seed=2)
    assert method.alignment(out) == pytest.approx(float(method.class_aware_alignment(out)[0]))
    assert all(torch.equal(a, b) for a, b in zip(etas, method.parameters(), strict=True))


def test_label_cost_is_checked_and_belongs_to_the_robust_variant():
    assert LossConfig(label_cost=0.5).options["label_cost"] == 0.5
    assert LossConfig().options["label_cost"] == 0.5  # the robust default
    assert LossConfig(variant="paper").options["label_cost"] == 0.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="label_cost"):
            LossConfig(label_cost=bad)
    with pytest.raises(ValueError, match="variant robust"):
        LossConfig(variant="paper", label_cost=0.5)
    with pytest.raises(ValueError, match="option of sidda"):
        LossConfig(method="dan", label_cost=0.5)
    assert np.isfinite(float(SIDDAMethod(variant="robust", label_cost=1.0)(_outputs()).total))


def test_non_finite_target_logits_give_a_nan_term_not_an_error():
    """A diverging classifier (NaN logits) must give a NaN DA term, which the training step
    skips and counts, never an exception from the Sinkhorn loop."""
    out = _outputs(seed=3)
    out.logits_t.data[2, 1] = float("nan")
    res = SIDDAMethod(variant="robust", label_cost=0.5)(out)
    assert math.isnan(float(res.da))
