"""SIDDA as a method: the paper variant is SIDDALoss unchanged; the robust variant's etas start
at their stationary values, keep eta_2 >= eta_1, and its BatchNorm keeps per-domain statistics
(training and evaluation)."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from sidda import DataConfig, LossConfig, RunConfig, SIDDALoss, TrainConfig, fit, load_domains
from sidda.experiments import evaluate_run, load_run_model, train_run
from sidda.methods import StepOutputs, build_method
from sidda.methods.domain_bn import DomainStats, batchnorm_layers
from sidda.methods.sidda import SIDDAMethod
from sidda.models import build_model
from sidda.runs import load_checkpoint
from sidda.train import train_step


def _batch(b_s=8, b_t=6, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return StepOutputs(z_s=torch.randn(b_s, d, generator=g),
                       z_t=torch.randn(b_t, d, generator=g) + 2,
                       logits_s=torch.randn(b_s, k, generator=g),
                       logits_t=torch.randn(b_t, k, generator=g),
                       y_s=torch.randint(0, k, (b_s,), generator=g))


def test_paper_variant_is_siddaloss_unchanged():
    out = _batch()
    method, ref = SIDDAMethod(variant="paper"), SIDDALoss(mode="faithful")
    got, want = method(out), ref(out.logits_s, out.y_s, out.z_s, out.z_t)
    assert got.total.item() == want.total.item() and got.da.item() == want.da.item()
    assert got.logs["blur"] == want.blur and method.domain_stats is None
    assert method.loss.mode == "faithful" and method.loss.eta_ratio_min == 0.25
    assert "weight_decay" not in method.param_groups()[0]  # the etas share AdamW's decay


def test_robust_variant_starts_the_etas_at_their_stationary_values():
    """Without the window (stationary_window=0) the etas are set once, at the first step."""
    out = _batch()
    method = SIDDAMethod(variant="robust", stationary_window=0)
    res = method(out)
    ce, da = float(res.ce), float(res.da)
    assert method.loss.eta_1.item() == pytest.approx(math.sqrt(ce))
    assert method.loss.eta_2.item() == pytest.approx(max(math.sqrt(da), math.sqrt(ce)))
    # the objective then is CE/(2 eta_1^2) + DA/(2 eta_2^2) + log(eta_1 eta_2), with those etas
    e1, e2 = method.loss.eta_1.item(), method.loss.eta_2.item()
    assert float(res.total) == pytest.approx(ce / (2 * e1**2) + da / (2 * e2**2)
                                             + math.log(e1 * e2), rel=1e-5)
    # only once: a second call keeps the (now trained) etas
    with torch.no_grad():
        method.loss.eta_1.fill_(0.7)
    method(_batch(seed=1))
    assert method.loss.eta_1.item() == pytest.approx(0.7)
    assert bool(method.state_dict()["started"])


def test_robust_bound_keeps_the_da_weight_at_most_the_ce_weight():
    method = SIDDAMethod(variant="robust")
    with torch.no_grad():
        method.loss.eta_1.fill_(2.0)
        method.loss.eta_2.fill_(0.1)
    method.after_step()  # clean mode: the bound holds after every step
    assert method.loss.eta_2.item() == pytest.approx(2.0)
    assert method.param_groups()[0]["weight_decay"] == 0.0


def test_domain_stats_keep_one_set_of_batchnorm_statistics_per_domain():
    """Against a hand computation: BatchNorm's running mean after one source pass and one
    target pass (momentum 0.1), each domain in its own copy."""
    model = nn.Sequential(nn.BatchNorm2d(2))
    stats = DomainStats()
    stats.attach(model)
    x_s = torch.randn(4, 2, 3, 3)
    x_t = torch.randn(5, 2, 3, 3) * 7 + 3
    model.train()
    model(x_s)
    with stats.target():
        out_t = model(x_t)
    bn = model[0]
    mean_s = x_s.double().mean((0, 2, 3)).numpy()
    mean_t = x_t.double().mean((0, 2, 3)).numpy()
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean_s, rtol=1e-5)
    np.testing.assert_allclose(stats.t0_running_mean.numpy(), 0.1 * mean_t, rtol=1e-5)
    # the target pass was normalised with the target batch's own statistics
    np.testing.assert_allclose(out_t.mean((0, 2, 3)).detach().numpy(), 0.0, atol=1e-5)
    # eval inside target(): the target running statistics are used
    model.eval()
    with stats.target():
        y = model(x_t)
    want = (x_t - stats.t0_running_mean.view(1, 2, 1, 1)) / torch.sqrt(
        stats.t0_running_var.view(1, 2, 1, 1) + bn.eps)
    torch.testing.assert_close(y, want)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean_s, rtol=1e-5)  # untouched


def test_escnn_batchnorm_is_found():
    model = build_model("d2", in_channels=1, num_classes=3, image_size=16, latent_dim=8)
    assert len(batchnorm_layers(model)) == 3


def test_robust_step_removes_the_batchnorm_shock():
    """With domain-specific BatchNorm the source logits of a training step do not depend on
    the target batch; with the paper's concatenated pass they do."""
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)
    x_s, y_s = torch.randn(6, 1, 16, 16), torch.randint(0, 3, (6,))
    ce = {}
    for variant in ("paper", "robust"):
        for scale in (1.0, 30.0):
            net = build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)
            net.load_state_dict(model.state_dict())
            method = SIDDAMethod(variant=variant)
            method.attach(net)
            opt = torch.optim.AdamW([{"params": net.parameters()}, *method.param_groups()])
            net.train()
            x_t = torch.randn(6, 1, 16, 16) * scale + scale
            torch.manual_seed(1)
            out = train_step(net, x_s, y_s, x_t, criterion=method, optimizer=opt, grad_clip=10.0)
            ce[variant, scale] = out["ce"]
    assert ce["robust", 1.0] == pytest.approx(ce["robust", 30.0], rel=1e-6)
    assert abs(ce["paper", 1.0] - ce["paper", 30.0]) > 1e-3


def test_loss_config_exposes_the_variant():
    assert LossConfig(variant="robust").variant == "robust"
    method = build_method(LossConfig(variant="robust"), latent_dim=4, num_classes=3)
    assert isinstance(method, SIDDAMethod) and method.domain_stats is not None
    # the class and the config agree on each variant's blur factor
    for variant, factor in (("paper", 0.05), ("robust", 0.2)):
        built = build_method(LossConfig(variant=variant), latent_dim=4, num_classes=3)
        assert built.loss.sinkhorn.blur_factor == factor
        assert SIDDAMethod(variant=variant).loss.sinkhorn.blur_factor == factor
    with pytest.raises(ValueError, match="variant"):
        LossConfig(variant="sturdy")
    with pytest.raises(ValueError, match="option of sidda"):
        LossConfig(method="dan", variant="robust")


def test_robust_run_evaluates_the_target_with_the_target_statistics(tiny_data, tmp_path):
    """End to end: fit saves the target statistics with every checkpoint; evaluation of the
    target test set uses them (checked against a model loaded by hand)."""
    cfg = RunConfig.from_dict({
        "name": "robust", "out_dir": str(tmp_path / "runs"), "data": {"path": str(tiny_data)},
        "model": {"name": "cnn", "latent_dim": 16}, "loss": {"variant": "robust"},
        "train": {"epochs": 3, "warmup": 1, "batch_size": 8, "threads": 1}})
    run_dir = train_run(cfg)
    rep = evaluate_run(run_dir, calibration=False, selection=False)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    model, _ = load_run_model(run_dir)
    by_hand = {k: v for k, v in ckpt["loss"].items() if k.startswith("domain_stats.")}
    assert len(by_hand) == 3 * 3
    for i, bn in enumerate(batchnorm_layers(model)):
        bn.running_mean.copy_(by_hand[f"domain_stats.t{i}_running_mean"])
        bn.running_var.copy_(by_hand[f"domain_stats.t{i}_running_var"])
    d = load_domains(DataConfig(path=str(tiny_data)), splits=("test",))
    with torch.no_grad():
        probs = torch.softmax(model.eval()(d.test_t.x)[1], 1).numpy()
    np.testing.assert_allclose(np.load(run_dir / "probs_target.npy"), probs, rtol=1e-4, atol=1e-5)
    src = load_run_model(run_dir)[0]
    assert not torch.equal(batchnorm_layers(src)[0].running_mean,
                           batchnorm_layers(model)[0].running_mean)
    assert json.loads((run_dir / "metrics.json").read_text())["target"]["accuracy"] == \
        rep["target"]["accuracy"]


class _Crash(Exception):
    pass


def _crash_at_epoch(n):
    def cb(event, row):
        if event == "epoch" and row["epoch"] == n:
            raise _Crash
    return cb


def test_robust_fit_resumes_bit_identically(tiny_data, tmp_path):
    """A crash after epoch 2 (of 4), then resume: the weights, the etas, the 'started' flag
    and the target BatchNorm statistics equal the uninterrupted run's."""
    d = load_domains(DataConfig(path=str(tiny_data)))
    cfg = TrainConfig(epochs=4, warmup=1, batch_size=8, threads=1)
    loss = LossConfig(variant="robust")

    def model():
        torch.manual_seed(0)
        return build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)

    ref = model()
    fit(ref, d.train_s, d.train_t, cfg, loss=loss, run_dir=tmp_path / "ref")
    with pytest.raises(_Crash):
        fit(model(), d.train_s, d.train_t, cfg, loss=loss, run_dir=tmp_path / "cut",
            callbacks=[_crash_at_epoch(2)])
    resumed = model()
    fit(resumed, d.train_s, d.train_t, cfg, loss=loss, run_dir=tmp_path / "cut", resume=True)
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "final.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "final.pt")
    assert a["model"].keys() == b["model"].keys() and a["loss"].keys() == b["loss"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["loss"]:
        assert torch.equal(a["loss"][k], b["loss"][k]), k
    assert "domain_stats.t0_running_mean" in a["loss"] and bool(a["loss"]["started"])


def test_dann_ramp_against_its_closed_form():
    from sidda.methods.sidda import dann_ramp

    assert dann_ramp(0.0) == 0.0
    for p in (0.1, 0.3, 0.5, 1.0):
        assert dann_ramp(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1, rel=1e-12)
    assert dann_ramp(1.0) == pytest.approx(0.9999092, abs=1e-7)
    assert dann_ramp(-1.0) == 0.0 and dann_ramp(2.0) == dann_ramp(1.0)  # clipped to [0, 1]


def test_da_ramp_scales_the_da_term_and_starts_the_etas_from_the_unramped_da():
    from sidda.methods.sidda import dann_ramp

    out = _batch()
    out.progress = 0.2
    method = SIDDAMethod(variant="robust", da_ramp="dann")
    res = method(out)
    ce, da = float(res.ce), float(res.da)  # logged unramped
    assert method.loss.eta_2.item() == pytest.approx(max(math.sqrt(da), math.sqrt(ce)))
    e1, e2 = method.loss.eta_1.item(), method.loss.eta_2.item()
    lam = dann_ramp(0.2)
    assert float(res.total) == pytest.approx(ce / (2 * e1**2) + lam * da / (2 * e2**2)
                                             + math.log(e1 * e2), rel=1e-6)
    # p = 0: the DA term is off (its gradient too)
    out.progress = 0.0
    z_s = out.z_s.clone().requires_grad_(True)
    out.z_s = z_s
    method(out).total.backward()
    assert float(z_s.grad.abs().max()) == 0.0


def test_default_and_paper_variant_ignore_progress():
    """No ramp by default: the objective is the same at every progress, and the paper variant's
    equals SIDDALoss's for the same inputs (it takes no ramp)."""
    for variant in ("paper", "robust"):
        totals = set()
        for p in (0.0, 0.37, 1.0):
            out = _batch()
            out.progress = p
            totals.add(SIDDAMethod(variant=variant)(out).total.item())
        assert len(totals) == 1
    out = _batch()
    out.progress = 0.0
    got = SIDDAMethod(variant="paper")(out).total.item()
    want = SIDDALoss(mode="faithful")(out.logits_s, out.y_s, out.z_s, out.z_t).total.item()
    assert got == want
    assert LossConfig(variant="paper").da_ramp == "none"
    assert LossConfig(variant="robust", da_ramp="dann").da_ramp == "dann"
    with pytest.raises(ValueError, match="da_ramp"):
        LossConfig(variant="paper", da_ramp="dann")
    with pytest.raises(ValueError, match="da_ramp"):
        LossConfig(variant="robust", da_ramp="linear")
    with pytest.raises(ValueError, match="da_ramp"):
        SIDDAMethod(variant="paper", da_ramp="dann")


def test_train_step_passes_the_progress_to_the_ramp():
    torch.manual_seed(0)
    net = build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)
    method = SIDDAMethod(variant="robust", da_ramp="dann")
    method.attach(net)
    opt = torch.optim.AdamW([{"params": net.parameters()}, *method.param_groups()])
    x_s, y_s = torch.randn(6, 1, 16, 16), torch.randint(0, 3, (6,))
    x_t = torch.randn(6, 1, 16, 16) + 1
    out = train_step(net, x_s, y_s, x_t, criterion=method, optimizer=opt, grad_clip=10.0,
                     progress=0.0)
    # at p = 0 the total is the CE term and the log alone (etas from this step's CE and DA)
    e1 = math.sqrt(out["ce"])
    e2 = max(math.sqrt(out["da"]), e1)
    assert out["total"] == pytest.approx(0.5 + math.log(e1 * e2), rel=1e-5)


def test_stationary_window_holds_the_etas_at_the_mean_ce_and_da():
    method = SIDDAMethod(variant="robust", stationary_window=0.1)
    steps = [(0.2, 36.0, 0.0), (0.4, 4.0, 0.03), (0.3, 2.0, 0.09)]
    for i, (ce, da, p) in enumerate(steps, 1):
        method.weigh(torch.tensor(ce), torch.tensor(da), p)
        mean_ce = sum(s[0] for s in steps[:i]) / i
        mean_da = sum(s[1] for s in steps[:i]) / i
        assert method.loss.eta_1.item() == pytest.approx(math.sqrt(mean_ce), rel=1e-6)
        assert method.loss.eta_2.item() == pytest.approx(math.sqrt(mean_da), rel=1e-6)
    # past the window the etas are left to the optimiser
    with torch.no_grad():
        method.loss.eta_2.fill_(3.0)
    method.weigh(torch.tensor(0.1), torch.tensor(1.0), 0.1)
    assert method.loss.eta_2.item() == 3.0
    assert "window_sums" in method.state_dict()  # resumable
    # the default keeps the first step's start and the state_dict of before
    assert "window_sums" not in SIDDAMethod(variant="robust", stationary_window=0).state_dict()
    assert "window_sums" in SIDDAMethod(variant="robust").state_dict()  # the default: 0.05
    assert LossConfig(variant="robust").stationary_window == 0.05
    assert LossConfig(variant="paper").stationary_window == 0.0
    with pytest.raises(ValueError, match="stationary_window"):
        LossConfig(variant="paper", stationary_window=0.05)
    with pytest.raises(ValueError, match="stationary_window"):
        SIDDAMethod(variant="paper", stationary_window=0.05)


def test_a_checkpoint_from_before_the_window_loads_into_the_default_robust_method():
    old = SIDDAMethod(variant="robust", stationary_window=0)
    old.loss.eta_2.data.fill_(3.0)
    new = SIDDAMethod(variant="robust")
    new.load_state_dict(old.state_dict())  # strict: every other key must match
    assert new.loss.eta_2.item() == 3.0 and new.window_sums.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match="eta_1"):
        new.load_state_dict({k: v for k, v in old.state_dict().items() if "eta_1" not in k})
