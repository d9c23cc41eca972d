import math

import pytest
import torch
from geomloss import SamplesLoss

from sidda import SIDDALoss, SinkhornLoss, dynamic_blur, max_cross_distance, sinkhorn_divergence
from sidda.methods import LossConfig


def test_matches_direct_geomloss_call():
    z_s, z_t = torch.randn(40, 8), torch.randn(30, 8) + 0.5
    ref = SamplesLoss("sinkhorn", p=2, blur=0.1, scaling=0.9, reach=None, debias=True,
                      backend="tensorized")(z_s, z_t)
    assert torch.allclose(sinkhorn_divergence(z_s, z_t, blur=0.1), ref, rtol=1e-6, atol=1e-7)


def test_divergence_properties():
    z_s, z_t = torch.randn(32, 5), torch.randn(32, 5)
    assert float(sinkhorn_divergence(z_s, z_s, blur=0.05)) < 1e-5
    a = sinkhorn_divergence(z_s, z_t, blur=0.05)
    b = sinkhorn_divergence(z_t, z_s, blur=0.05)
    assert torch.allclose(a, b, rtol=1e-4)
    assert float(a) > 0


def test_translation_closed_form():
    # For a pure translation by v at small blur, S ~ W2^2 / 2 = |v|^2 / 2 (cost |x-y|^2 / 2).
    z = torch.randn(64, 3, dtype=torch.float64)
    v = torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)
    s = float(sinkhorn_divergence(z, z + v, blur=0.01, scaling=0.95))
    assert s == pytest.approx(0.5 * float(v @ v), rel=1e-2)


def test_gradient_matches_finite_differences_when_converged():
    # geomloss differentiates the last Sinkhorn iteration (envelope theorem): exact at
    # convergence, so test with a slow annealing (scaling 0.99) in float64.
    a = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def f(x, y):
        return sinkhorn_divergence(x, y, blur=2.0, scaling=0.99)

    ga, gb = torch.autograd.grad(f(a, b), (a, b))
    h = 1e-5
    for _ in range(3):
        da, db = torch.randn_like(a), torch.randn_like(b)
        num = (f(a + h * da, b + h * db) - f(a - h * da, b - h * db)) / (2 * h)
        ana = (ga * da).sum() + (gb * db).sum()
        assert float(ana) == pytest.approx(float(num.detach()), rel=1e-2, abs=3e-3)


def test_dynamic_blur_against_numpy_loop():
    z_s, z_t = torch.randn(7, 4), torch.randn(9, 4)
    dmax = max(math.dist(a.tolist(), b.tolist()) for a in z_s for b in z_t)
    assert max_cross_distance(z_s, z_t) == pytest.approx(dmax, rel=1e-5)
    assert dynamic_blur(z_s, z_t) == pytest.approx(max(0.05 * dmax, 0.01), rel=1e-5)
    assert dynamic_blur(z_s * 1e-4, z_t * 1e-4) == 0.01
    # no gradient flows through the blur
    z = torch.randn(3, 2, requires_grad=True)
    assert isinstance(dynamic_blur(z, z + 1), float)


def test_module_equals_function():
    z_s, z_t = torch.randn(8, 4), torch.randn(8, 4)
    assert SinkhornLoss(blur=0.05)(z_s, z_t) == sinkhorn_divergence(z_s, z_t, blur=0.05)
    b = dynamic_blur(z_s, z_t)
    assert SinkhornLoss()(z_s, z_t) == sinkhorn_divergence(z_s, z_t, blur=b)



def test_one_blur_rule():
    """blur_for is the rule everything uses: fixed, else factor * distance with a floor; inf
    when the distances overflow."""
    sk = SinkhornLoss(blur_factor=0.2, blur_floor=0.05)
    assert sk.blur_for(1.0) == pytest.approx(0.2) and sk.blur_for(0.1) == 0.05
    assert sk.blur_for(math.inf) == math.inf and sk.blur_for(math.nan) == math.inf
    assert SinkhornLoss(blur=0.3).blur_for(math.inf) == 0.3
    z_s, z_t = torch.randn(7, 4), torch.randn(9, 4)
    assert sk.resolve_blur(z_s, z_t) == sk.blur_for(max_cross_distance(z_s, z_t))
    assert dynamic_blur(z_s, z_t, factor=0.2, floor=0.05) == sk.resolve_blur(z_s, z_t)
    out = SIDDALoss(blur_factor=0.2, blur_floor=0.05)(torch.randn(7, 3), torch.zeros(7).long(),
                                                      z_s, z_t)
    assert out.blur == sk.blur_for(out.max_distance)
    with pytest.raises(ValueError, match="factor and floor must be > 0"):
        SinkhornLoss(blur_factor=0.0)


@pytest.mark.parametrize("blur", [None, 0.1])
def test_overflowing_distances_give_nan_not_an_error(blur):
    """Finite latents whose distances overflow float32: the loss reports a non-finite max
    distance and a NaN DA term (the one protocol a training step checks), no exception."""
    z_s, z_t = torch.full((4, 8), 3e38), torch.full((5, 8), -3e38)
    crit = SIDDALoss(blur=blur)
    out = crit(torch.randn(4, 3), torch.zeros(4).long(), z_s, z_t)
    assert not math.isfinite(out.max_distance) and math.isnan(float(out.da))
    assert math.isfinite(float(out.ce)) and not math.isfinite(float(out.total))
    if blur is None:
        assert out.blur == math.inf and math.isnan(float(SinkhornLoss()(z_s, z_t)))

def test_sidda_loss_formula_and_parts():
    crit = SIDDALoss()
    with torch.no_grad():
        crit.eta_1.fill_(0.7)
        crit.eta_2.fill_(1.3)
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    z_s, z_t = torch.randn(6, 4), torch.randn(6, 4) + 1
    out = crit(logits, y, z_s, z_t)
    ce = torch.nn.functional.cross_entropy(logits, y)
    blur = max(0.05 * torch.cdist(z_s, z_t).max().item(), 0.01)
    da = sinkhorn_divergence(z_s, z_t, blur=blur)
    expected = ce / (2 * 0.49) + da / (2 * 1.69) + math.log(0.7 * 1.3)
    assert float(out.total) == pytest.approx(float(expected), rel=1e-5)
    assert out.blur == pytest.approx(blur, rel=1e-6)
    assert (out.eta_1, out.eta_2) == pytest.approx((0.7, 1.3))


@pytest.mark.parametrize("mode", ["faithful", "clean"])
def test_eta_bounds_hold_under_pressure(mode):
    """A loss driving eta_2 down hard: the bounds must hold (clean) or be restored (faithful)."""
    crit = SIDDALoss(mode=mode)
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.AdamW([{"params": [w]}, crit.param_group()], lr=0.5, weight_decay=1e-3)
    seen = []
    for _ in range(30):
        opt.zero_grad()
        z = torch.randn(8, 4) @ w
        out = crit(z, torch.randint(0, 3, (8,)), z, z * 3.0)
        (out.total * 10).backward()
        crit.before_step()
        if mode == "faithful":  # the values used in this step satisfy the bounds
            seen.append((float(crit.eta_1), float(crit.eta_2)))
        opt.step()
        crit.after_step()
        if mode == "clean":
            seen.append((float(crit.eta_1), float(crit.eta_2)))
    for e1, e2 in seen:
        assert e1 >= 1e-3 - 1e-9
        assert e2 >= 0.25 * e1 - 1e-7
    assert crit.param_group().get("weight_decay") == (0.0 if mode == "clean" else None)


def test_validation_errors():
    with pytest.raises(ValueError, match="blur must be"):
        sinkhorn_divergence(torch.randn(3, 2), torch.randn(3, 2), blur=0.0)
    with pytest.raises(ValueError, match="same width"):
        sinkhorn_divergence(torch.randn(3, 2), torch.randn(3, 4), blur=0.1)
    with pytest.raises(ValueError, match="2-D"):
        max_cross_distance(torch.randn(3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="method"):
        LossConfig(method="vada")
    with pytest.raises(ValueError, match="scaling"):
        LossConfig(scaling=1.5)


# --- backends ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["blocked", "dense"])
@pytest.mark.parametrize(("n", "m", "d", "blur"), [(40, 30, 8, 0.1), (7, 9, 3, 2.0),
                                                   (33, 33, 5, 0.01)])
def test_own_backends_match_geomloss_with_gradients(backend, n, m, d, blur, monkeypatch):
    import sidda._sinkhorn

    monkeypatch.setattr(sidda._sinkhorn, "BLOCK_BYTES", 3 * 5 * 8 * max(n, m))  # 5-row blocks
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, dtype=torch.float64, generator=gen).requires_grad_()
    y = (torch.randn(m, d, dtype=torch.float64, generator=gen) + 0.5).requires_grad_()
    ref = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.9, reach=None, debias=True,
                      backend="tensorized")(x, y)
    out = sinkhorn_divergence(x, y, blur=blur, backend=backend)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(torch.autograd.grad(out, (x, y)), torch.autograd.grad(ref, (x, y)),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("backend", ["blocked", "dense"])
def test_own_backends_properties_in_float32(backend):
    z_s, z_t = torch.randn(48, 16), torch.randn(40, 16) + 0.3
    assert float(sinkhorn_divergence(z_s, z_s, blur=0.05, backend=backend)) < 1e-4
    a = sinkhorn_divergence(z_s, z_t, blur=0.5, backend=backend)
    b = sinkhorn_divergence(z_t, z_s, blur=0.5, backend=backend)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a, sinkhorn_divergence(z_s, z_t, blur=0.5, backend="tensorized"),
                               rtol=1e-5, atol=1e-5)


def test_auto_backend_is_pinned_by_size(monkeypatch):
    import sidda.losses
    from sidda.losses import resolve_backend

    assert resolve_backend("auto", 128, 128) == "dense"  # the paper's batches
    assert resolve_backend("auto", 1024, 1024) == "tensorized"
    assert resolve_backend("auto", 8192, 8192) == "blocked"
    assert resolve_backend("tensorized", 8192, 8192) == "tensorized"
    z_s, z_t = torch.randn(20, 4), torch.randn(20, 4)
    monkeypatch.setattr(sidda.losses, "AUTO_DENSE_MAX", 0)
    monkeypatch.setattr(sidda.losses, "AUTO_TENSORIZED_BYTES", 0)  # nothing fits: blocked
    assert resolve_backend("auto", 20, 20) == "blocked"
    torch.testing.assert_close(sinkhorn_divergence(z_s, z_t, blur=0.3),
                               sinkhorn_divergence(z_s, z_t, blur=0.3, backend="blocked"))
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("keops", 2, 2)


def test_keops_backends_need_pykeops():
    pytest.importorskip("geomloss")
    try:
        import pykeops  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pykeops"):
            sinkhorn_divergence(torch.randn(4, 2), torch.randn(4, 2), blur=0.1, backend="online")
    else:  # pragma: no cover - pykeops installed
        pytest.skip("pykeops is installed")
