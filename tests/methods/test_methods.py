"""The baseline methods (DAN, Deep CORAL, DANN, CDAN, DeepJDOT, MCC), each against something
independent: a literal NumPy loop, np.cov, POT, autograd with and without reversal."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sidda import LossConfig, TrainConfig, build_model, fit
from sidda.methods import OPTIONS, StepOutputs, method_class
from sidda.methods.adversarial import (
    domain_loss,
    grl_coefficient,
    reverse_gradient,
)
from sidda.methods.cdan import multilinear_map, randomized_multilinear_map
from sidda.methods.coral import coral
from sidda.methods.dan import KERNEL_MULTIPLIERS, mk_mmd
from sidda.methods.deepjdot import entropic_plan, jdot_cost
from sidda.methods.mcc import class_confusion

BASELINES = ("dan", "coral", "dann", "cdan", "deepjdot", "mcc")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _outputs(b_s=7, b_t=9, d=5, k=3, *, dtype=torch.float32, shift=0.5, progress=0.5,
             requires_grad=False):
    g = torch.Generator().manual_seed(0)
    z_s = torch.randn(b_s, d, generator=g, dtype=dtype)
    z_t = torch.randn(b_t, d, generator=g, dtype=dtype) + shift
    logits_s = torch.randn(b_s, k, generator=g, dtype=dtype)
    logits_t = torch.randn(b_t, k, generator=g, dtype=dtype)
    for t in (z_s, z_t, logits_s, logits_t):
        t.requires_grad_(requires_grad)
    y_s = torch.randint(0, k, (b_s,), generator=g)
    return StepOutputs(z_s=z_s, z_t=z_t, logits_s=logits_s, logits_t=logits_t, y_s=y_s,
                       progress=progress)


def _method(name, d=5, k=3, **options):
    opts = {**OPTIONS[name], **options}
    return method_class(name)(latent_dim=d, num_classes=k, **opts)


# ---------------------------------------------------------------------------- every method


@pytest.mark.parametrize("name", BASELINES)
def test_unequal_batches_finite_and_total_is_ce_plus_weighted_da(name):
    out = _outputs(7, 9, requires_grad=True)
    method = _method(name, weight=0.7)
    res = method(out)
    assert method.name == name
    for v in (res.total, res.ce, res.da):
        assert v.ndim == 0 and torch.isfinite(v)
    assert res.ce.item() == pytest.approx(F.cross_entropy(out.logits_s, out.y_s).item())
    assert res.total.item() == pytest.approx((res.ce + 0.7 * res.da).item(), rel=1e-6)
    assert all(isinstance(v, float) and math.isfinite(v) for v in res.logs.values())
    res.total.backward()
    grads = [t.grad for t in (out.z_s, out.z_t, out.logits_s, out.logits_t)]
    assert grads[2] is not None  # the source cross-entropy
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.parametrize("name", BASELINES)
def test_single_source_latent_works(name):
    res = _method(name)(_outputs(1, 4))  # the last, partial source batch of an epoch
    assert torch.isfinite(res.total)


@pytest.mark.parametrize("name", BASELINES)
def test_fit_trains_each_method(name, tiny_sets, tmp_path):
    d = tiny_sets
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=3, image_size=16)
    cfg = TrainConfig(epochs=2, warmup=1, batch_size=8, threads=1)
    hist = fit(model, d.train_s, d.train_t, cfg, loss=LossConfig(method=name),
               val_s=d.test_s, val_t=d.test_t, run_dir=tmp_path)
    assert len(hist.epochs) == 2
    aligned = hist.epochs[1]
    assert aligned["train_da"] is not None and math.isfinite(aligned["train_da"])
    assert aligned["val_da"] is not None and math.isfinite(aligned["val_da"])
    steps = [s for s in hist.steps if s.get("da") is not None]
    assert steps and not any(s.get("skipped") for s in steps)
    assert (tmp_path / "checkpoints" / "final.pt").is_file()
    if name in ("dann", "cdan"):  # the loop passes the progress of the alignment phase
        coeffs = [s["grl_coeff"] for s in steps]
        assert coeffs[0] == 0.0 and 0 < coeffs[-1] < 1 and coeffs == sorted(coeffs)
        assert all(0 <= s["domain_acc"] <= 1 for s in steps)


# ---------------------------------------------------------------------------- DAN


def _mk_mmd_loop(z_s, z_t, multipliers):
    w = np.concatenate([z_s, z_t])
    n = len(w)
    total, pairs = 0.0, 0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += np.sum((w[i] - w[j]) ** 2)
                pairs += 1
    scale = total / pairs

    def k(x, y):
        d2 = np.sum((x - y) ** 2)
        return sum(np.exp(-d2 / (2 * m * scale)) for m in multipliers) / len(multipliers)

    xx = sum(k(a, b) for a in z_s for b in z_s) / len(z_s) ** 2
    yy = sum(k(a, b) for a in z_t for b in z_t) / len(z_t) ** 2
    xy = sum(k(a, b) for a in z_s for b in z_t) / (len(z_s) * len(z_t))
    return xx + yy - 2 * xy


def test_mk_mmd_matches_numpy_double_loop():
    out = _outputs(6, 8, d=4, dtype=torch.float64)
    got = float(mk_mmd(out.z_s, out.z_t))
    want = _mk_mmd_loop(out.z_s.numpy(), out.z_t.numpy(), KERNEL_MULTIPLIERS)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert want > 0.01  # the clouds differ by a shift: a non-trivial comparison


def test_mk_mmd_is_zero_for_equal_batches_and_rejects_bad_input():
    z = torch.randn(5, 3)
    assert abs(float(mk_mmd(z, z.clone()))) < 1e-6
    with pytest.raises(ValueError, match="same|B_s, D"):
        mk_mmd(z, torch.randn(5, 4))


# ---------------------------------------------------------------------------- CORAL


def test_coral_matches_numpy_cov():
    out = _outputs(7, 11, d=4, dtype=torch.float64)
    z_s, z_t = out.z_s.numpy(), out.z_t.numpy() * 2.0
    want = np.sum((np.cov(z_s, rowvar=False) - np.cov(z_t, rowvar=False)) ** 2) / (4 * 4 ** 2)
    assert float(coral(out.z_s, out.z_t * 2.0)) == pytest.approx(want, rel=1e-10)


def test_coral_gradcheck():
    out = _outputs(4, 5, d=3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(coral, (out.z_s, out.z_t))


# ---------------------------------------------------------------------------- DANN


def test_grl_schedule_values():
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert grl_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_coefficient(0.5) == pytest.approx(0.98661, abs=1e-5)


def test_dann_head_ends_in_one_logit():
    m = _method("dann", d=5)
    last = [mod for mod in m.head.modules() if isinstance(mod, torch.nn.Linear)][-1]
    assert last.out_features == 1
    assert m.head(torch.randn(4, 5)).shape == (4,)


def test_grl_flips_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    (torch.sin(x) * w).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (torch.sin(y) * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * plain)


def test_dann_gradient_on_z_is_the_reversed_domain_gradient():
    out = _outputs(6, 4, requires_grad=True, progress=0.3)
    m = _method("dann", weight=0.5).eval()  # no dropout: the two passes see the same head
    m(out).da.backward()
    reversed_grad = out.z_s.grad.clone(), out.z_t.grad.clone()
    out.z_s.grad = out.z_t.grad = None
    domain_loss(m.head(out.z_s), m.head(out.z_t)).backward()
    coeff = grl_coefficient(0.3)
    assert torch.allclose(reversed_grad[0], -coeff * out.z_s.grad, atol=1e-7)
    assert torch.allclose(reversed_grad[1], -coeff * out.z_t.grad, atol=1e-7)
    assert out.z_s.grad.abs().sum() > 0  # the adversarial gradient is not zero


def test_dann_logs_and_adversarial_gradient_nonzero_in_training():
    out = _outputs(7, 9, requires_grad=True, progress=0.5)
    m = _method("dann")
    res = m(out)
    assert res.logs["grl_coeff"] == pytest.approx(grl_coefficient(0.5))
    assert 0.0 <= res.logs["domain_acc"] <= 1.0
    res.da.backward()
    assert out.z_t.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.head.parameters())


def test_dann_head_learns_to_separate_two_clouds():
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(32, 5, generator=g) + 1.5, torch.randn(24, 5, generator=g) - 1.5
    m = _method("dann", d=5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        res = m(StepOutputs(z_s=z_s, z_t=z_t, logits_s=torch.zeros(32, 3),
                            logits_t=torch.zeros(24, 3), y_s=torch.zeros(32, dtype=torch.long),
                            progress=1.0))
        res.da.backward()
        opt.step()
        losses.append(res.da.item())
    assert losses[-1] < 0.5 * losses[0]
    assert res.logs["domain_acc"] > 0.9


# ---------------------------------------------------------------------------- CDAN


def test_multilinear_map_is_a_loop_of_outer_products():
    out = _outputs(5, 3, d=4, k=3)
    g = torch.softmax(out.logits_s, 1)
    want = np.stack([np.outer(z, p).ravel() for z, p in zip(out.z_s.numpy(), g.numpy(),
                                                           strict=True)])
    np.testing.assert_allclose(multilinear_map(out.z_s, g).numpy(), want, rtol=1e-6)
    m = _method("cdan", d=4, k=3)
    assert not m.randomized and m.head.net[0].in_features == 12
    f_s, f_t = m.features(out)
    np.testing.assert_allclose(f_s.detach().numpy(), want, rtol=1e-6)
    assert f_t.shape == (3, 12)


def test_cdan_softmax_is_detached():
    out = _outputs(5, 3, requires_grad=True)
    m = _method("cdan")
    m(out).da.backward()
    assert out.logits_s.grad is None and out.logits_t.grad is None
    assert out.z_s.grad.abs().sum() > 0


def test_randomized_map_shape_determinism_and_state_dict():
    d, k = 100, 50  # d * K = 5000 > 4096
    a, b = _method("cdan", d=d, k=k), _method("cdan", d=d, k=k)
    assert a.randomized and a.r_f.shape == (d, 1024) and a.r_g.shape == (k, 1024)
    assert torch.equal(a.r_f, b.r_f) and torch.equal(a.r_g, b.r_g)
    assert {"r_f", "r_g"} <= set(a.state_dict())
    z, logits = torch.randn(6, d), torch.randn(6, k)
    f = a.conditional_map(z, logits)
    assert f.shape == (6, 1024)
    g = torch.softmax(logits, 1)
    want = (z.numpy() @ a.r_f.numpy()) * (g.numpy() @ a.r_g.numpy()) / math.sqrt(1024)
    np.testing.assert_allclose(f.numpy(), want, rtol=1e-4, atol=1e-5)
    other = method_class("cdan")(latent_dim=d, num_classes=k, seed=7, **OPTIONS["cdan"])
    assert not torch.equal(other.r_f, a.r_f)
    other.load_state_dict(a.state_dict())
    assert torch.equal(other.conditional_map(z, logits), f)
    assert torch.equal(randomized_multilinear_map(z, g, a.r_f, a.r_g), f)


# ---------------------------------------------------------------------------- DeepJDOT


def test_jdot_cost_matches_a_loop():
    out = _outputs(4, 6, dtype=torch.float64)
    z_s, z_t, lt, y = (t.numpy() for t in (out.z_s, out.z_t, out.logits_t, out.y_s))
    d2 = np.array([[np.sum((a - b) ** 2) for b in z_t] for a in z_s])
    logp = lt - np.log(np.exp(lt).sum(1, keepdims=True))
    ce = np.array([[-logp[j, y[i]] for j in range(len(z_t))] for i in range(len(z_s))])
    want = 0.3 * d2 / d2.mean() + 2.0 * ce
    got = jdot_cost(out.z_s, out.z_t, out.logits_t, out.y_s, alpha=0.3, lam=2.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def test_deepjdot_plan_has_uniform_marginals():
    out = _outputs(7, 9, d=6)
    cost = jdot_cost(out.z_s, out.z_t, out.logits_t, out.y_s)
    plan = entropic_plan(cost, epsilon=0.1 * float(cost.mean()))
    assert torch.allclose(plan.sum(1), torch.full((7,), 1 / 7), atol=1e-5, rtol=0)
    assert torch.allclose(plan.sum(0), torch.full((9,), 1 / 9), atol=1e-5, rtol=0)


def test_deepjdot_plan_matches_pot():
    ot = pytest.importorskip("ot")
    out = _outputs(7, 9, d=6, dtype=torch.float64)
    cost = jdot_cost(out.z_s, out.z_t, out.logits_t, out.y_s)
    reg = 0.1 * float(cost.mean())
    plan = entropic_plan(cost, epsilon=reg, tol=1e-13, max_iter=20000)
    a, b = np.full(7, 1 / 7), np.full(9, 1 / 9)
    want = ot.sinkhorn(a, b, cost.numpy(), reg, numItermax=100000, stopThr=1e-13)
    np.testing.assert_allclose(plan.numpy(), want, atol=1e-6, rtol=0)
    assert want.max() > 10 * want.min()  # the plan is far from the uniform coupling


def test_deepjdot_gradient_flows_only_through_the_cost():
    out = _outputs(5, 6, dtype=torch.float64, requires_grad=True)
    m = _method("deepjdot")
    res = m(out)
    grads = torch.autograd.grad(res.da, (out.z_s, out.z_t, out.logits_t))
    cost = jdot_cost(out.z_s, out.z_t, out.logits_t, out.y_s)
    plan = entropic_plan(cost.detach(), epsilon=0.1 * float(cost.detach().mean()))
    assert not plan.requires_grad
    want = torch.autograd.grad((plan * cost).sum(), (out.z_s, out.z_t, out.logits_t))
    for g, w in zip(grads, want, strict=True):
        assert torch.allclose(g, w, atol=1e-10)
    assert res.da.item() == pytest.approx((plan * cost).sum().item())


def test_entropic_plan_of_a_non_finite_cost_is_nan_not_a_hang():
    cost = torch.rand(3, 4)
    cost[1, 2] = math.inf
    assert torch.isnan(entropic_plan(cost, epsilon=0.1)).all()
    cost[1, 2] = math.nan
    assert not torch.isfinite(entropic_plan(cost, epsilon=0.1)).all()


def test_deepjdot_rejects_bad_options():
    with pytest.raises(ValueError, match="blur"):
        _method("deepjdot", blur=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        entropic_plan(torch.rand(2, 3), epsilon=0.0)


# ---------------------------------------------------------------------------- MCC


def _mcc_numpy(logits, temperature):
    b, k = logits.shape
    x = logits / temperature
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h = np.array([-sum(p[i, j] * np.log(p[i, j]) for j in range(k)) for i in range(b)])
    w = 1 + np.exp(-h)
    w = b * w / w.sum()
    c = np.zeros((k, k))
    for i in range(b):
        c += w[i] * np.outer(p[i], p[i])
    c = c / c.sum(1, keepdims=True)
    return (c.sum() - np.trace(c)) / k


def test_mcc_matches_numpy():
    out = _outputs(5, 9, k=4, dtype=torch.float64)
    got = float(class_confusion(out.logits_t, temperature=2.5))
    assert got == pytest.approx(_mcc_numpy(out.logits_t.numpy(), 2.5), rel=1e-10)
    assert _method("mcc", k=4, temperature=2.5)(out).da.item() == pytest.approx(got)


def test_mcc_row_and_column_normalisation_agree():
    # the authors' code normalises columns; C is symmetric, so the loss is the same
    logits = torch.randn(6, 4, dtype=torch.float64)
    p = torch.softmax(logits / 2.5, 1)
    w = 1 + torch.exp((p * p.log()).sum(1))
    c = (p * (6 * w / w.sum())[:, None]).T @ p
    c = c / c.sum(1)  # the broadcast of the authors' code
    want = (c.sum() - c.trace()) / 4
    assert float(class_confusion(logits, temperature=2.5)) == pytest.approx(float(want))


def test_mcc_rejects_zero_temperature():
    with pytest.raises(ValueError, match="temperature"):
        _method("mcc", temperature=0.0)


# ---------------------------------------------------------------------------- benchmark


def test_bench_methods_runs_quick(capsys):
    import importlib

    n = torch.get_num_threads()
    sys.path.insert(0, str(BENCH))
    try:
        text = importlib.import_module("bench_methods").main(["--quick"])
    finally:
        sys.path.remove(str(BENCH))
        torch.set_num_threads(n)
    assert "/ SIDDA" in text and "deepjdot" in text
    assert "| --- |" not in text and "|---|" in text
    capsys.readouterr()
