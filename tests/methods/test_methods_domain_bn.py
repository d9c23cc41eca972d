"""Domain-specific BatchNorm statistics: ``DomainStats`` with plain ``nn.BatchNorm`` layers (the
GPU path), and ``loss.domain_bn``, the option of every method that uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sidda import DataConfig, LossConfig, TrainConfig, fit, load_domains
from sidda.errors import ConfigError
from sidda.methods import StepOutputs, build_method
from sidda.methods.domain_bn import DomainStats, batchnorm_layers, load_target_stats
from sidda.train import train_step
from sidda.train.validate import validate


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_two_passes_with_swapped_statistics_backpropagate():
    """The source pass's graph survives the target pass (an in-place swap broke backward)."""
    torch.manual_seed(0)
    net, stats = _net(), DomainStats()
    stats.attach(net)
    x_s, x_t = torch.randn(8, 1, 8, 8), 5 + 3 * torch.randn(8, 1, 8, 8)
    out_s = net(x_s)
    with stats.target():
        out_t = net(x_t)
    (out_s.square().mean() + out_t.square().mean()).backward()  # raised before the fix
    assert net[0].weight.grad is not None and torch.isfinite(net[0].weight.grad).all()


def test_each_domain_updates_only_its_own_running_statistics():
    torch.manual_seed(0)
    net, stats = _net(), DomainStats()
    stats.attach(net)
    bn = net[1]
    x_s, x_t = torch.randn(16, 1, 8, 8), 5 + torch.randn(16, 1, 8, 8)
    net(x_s)
    src_mean = bn.running_mean.clone()
    with stats.target():
        net(x_t)
        tgt_mean = bn.running_mean.clone()
    # the source statistics are back in the layer, untouched by the target pass
    assert torch.equal(bn.running_mean, src_mean)
    assert torch.equal(stats.t0_running_mean, tgt_mean)
    # the momentum-0.1 update from zero: 0.1 x the batch mean of the conv output, per domain
    with torch.no_grad():
        expect_t = 0.1 * net[0](x_t).mean(dim=(0, 2, 3))
    torch.testing.assert_close(tgt_mean, expect_t, rtol=1e-5, atol=1e-6)
    assert (tgt_mean - src_mean).abs().max() > 0.1


def test_saved_target_statistics_load_into_a_fresh_model():
    torch.manual_seed(0)
    net, stats = _net(), DomainStats()
    stats.attach(net)
    with stats.target():
        net(3 + torch.randn(16, 1, 8, 8))
    state = {f"domain_stats.{k}": v for k, v in stats.state_dict().items()}
    fresh = _net()
    fresh.load_state_dict(net.state_dict())
    loaded = load_target_stats(fresh, state)
    loaded._swap()  # evaluation of target images: the target statistics in the layers
    assert torch.equal(fresh[1].running_mean, stats.t0_running_mean)
    assert torch.equal(fresh[1].running_var, stats.t0_running_var)


# ------------------------------------------------- loss.domain_bn: an option of every method

#: Every method that aligns target batches, as a loss config with domain_bn on.
WITH_DBN = {
    "dan": LossConfig(method="dan", domain_bn=True),
    "coral": LossConfig(method="coral", domain_bn=True),
    "dann": LossConfig(method="dann", domain_bn=True),
    "cdan": LossConfig(method="cdan", domain_bn=True),
    "deepjdot": LossConfig(method="deepjdot", domain_bn=True),
    "mcc": LossConfig(method="mcc", domain_bn=True),
    "sidda_paper": LossConfig(variant="paper", domain_bn=True),
    "sidda_robust": LossConfig(variant="robust"),  # on by default
}


class Tiny(nn.Module):
    """conv -> BatchNorm -> ReLU -> pool -> latent (3) -> logits (3)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        z = F.relu(self.bn(self.conv(x))).mean((2, 3))  # (B, 3)
        return z, self.head(z)


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(6, 1, 6, 6, generator=g)
    x_t = 4 + 3 * torch.randn(5, 1, 6, 6, generator=g)
    return x_s, torch.randint(0, 3, (6,), generator=g), x_t


def test_the_default_is_the_paper_pass_and_on_for_robust_sidda_only():
    assert LossConfig().domain_bn is True and LossConfig(variant="paper").domain_bn is False
    for name in ("dan", "coral", "dann", "cdan", "deepjdot", "mcc"):
        method = build_method(LossConfig(method=name), latent_dim=3)
        assert LossConfig(method=name).domain_bn is False and method.single_pass
    assert LossConfig(method="source_only").domain_bn is None
    assert LossConfig(method="adabn").domain_bn is None


@pytest.mark.parametrize("name", sorted(WITH_DBN))
def test_each_pass_updates_only_its_own_domains_statistics(name):
    """Against a hand computation: from zero, one momentum-0.1 update with the batch mean of
    the conv output, the source pass in the model's layer, the target pass in the copy."""
    net, x_s, (_, _, x_t) = Tiny(), _batches()[0], _batches()
    method = build_method(WITH_DBN[name], latent_dim=3)
    method.attach(net)
    assert not method.single_pass
    with torch.no_grad():
        net.bn.running_mean.zero_()
        method.domain_stats.t0_running_mean.zero_()
        conv_s, conv_t = net.conv(x_s), net.conv(x_t)
    net.train()
    fwd = method.forward_passes(net, x_s, x_t)
    assert fwd.z_s.shape == (6, 3) and fwd.logits_t.shape == (5, 3)
    torch.testing.assert_close(net.bn.running_mean, 0.1 * conv_s.mean((0, 2, 3)))
    torch.testing.assert_close(method.domain_stats.t0_running_mean,
                               0.1 * conv_t.mean((0, 2, 3)))
    # each domain was normalised with its own batch statistics: the target outputs do not
    # depend on the source batch
    fwd2 = method.forward_passes(net, 10 * x_s, x_t)
    torch.testing.assert_close(fwd2.z_t, fwd.z_t)
    # and the objective runs on them
    res = method(StepOutputs(*fwd, _batches()[1]))
    assert torch.isfinite(res.total)


def test_without_domain_bn_one_pass_pools_both_domains():
    net, (x_s, _, x_t) = Tiny(), _batches()
    method = build_method(LossConfig(method="dan"), latent_dim=3)
    method.attach(net)
    with torch.no_grad():
        net.bn.running_mean.zero_()
        pooled = net.conv(torch.cat([x_s, x_t])).mean((0, 2, 3))
    net.train()
    method.forward_passes(net, x_s, x_t)
    torch.testing.assert_close(net.bn.running_mean, 0.1 * pooled)
    assert method.domain_stats is None and "domain_stats" not in str(method.state_dict())


@pytest.mark.parametrize("name", ["dan", "mcc", "sidda_paper"])
def test_target_images_are_evaluated_with_the_target_statistics(name):
    """``target_stats()`` (what validation, evaluation and prediction use) normalises with the
    target copies: the eval-mode output equals BatchNorm's formula with them."""
    net, (x_s, _, x_t) = Tiny(), _batches()
    method = build_method(WITH_DBN[name], latent_dim=3)
    method.attach(net)
    net.train()
    for _ in range(3):
        method.forward_passes(net, x_s, x_t)
    net.eval()
    stats = method.domain_stats
    with torch.no_grad():
        c = net.conv(x_t)
        want = (c - stats.t0_running_mean.view(1, 3, 1, 1)) / torch.sqrt(
            stats.t0_running_var.view(1, 3, 1, 1) + net.bn.eps)
        want = F.relu(want * net.bn.weight.view(1, 3, 1, 1) + net.bn.bias.view(1, 3, 1, 1))
        with method.target_stats():
            got = net(x_t)[0]
        source = net(x_t)[0]
    torch.testing.assert_close(got, want.mean((2, 3)))
    assert not torch.allclose(source, got, atol=1e-3)  # the source statistics differ


def test_validation_passes_target_images_with_the_target_statistics(tiny_data):
    d = load_domains(DataConfig(path=str(tiny_data)))
    from sidda.alignment import fixed_blur_sinkhorn
    from sidda.evaluate import forward_all
    from sidda.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)
    method = build_method(LossConfig(method="coral", domain_bn=True), latent_dim=8)
    method.attach(model)
    opt = torch.optim.AdamW(model.parameters())
    model.train()
    for i in range(3):  # target statistics away from the source ones
        train_step(model, d.train_s.x[i * 8:(i + 1) * 8], d.train_s.y[i * 8:(i + 1) * 8],
                   d.train_t.x[i * 8:(i + 1) * 8] * 3, criterion=method, optimizer=opt,
                   grad_clip=10.0)
    got = validate(model, d.test_s, d.test_t, criterion=method, with_da=True, batch_size=8,
                   device=torch.device("cpu"))
    model.eval()
    z_s, _ = forward_all(model, d.test_s, batch_size=8, device="cpu")
    with method.target_stats():
        z_t, _ = forward_all(model, d.test_t, batch_size=8, device="cpu")
    z_t_source, _ = forward_all(model, d.test_t, batch_size=8, device="cpu")
    assert got["val_sinkhorn_fixed"] == pytest.approx(float(fixed_blur_sinkhorn(z_s, z_t)))
    assert got["val_sinkhorn_fixed"] != pytest.approx(
        float(fixed_blur_sinkhorn(z_s, z_t_source)))
    assert math.isfinite(got["val_da"])


class NoBN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Flatten(), nn.Linear(256, 4))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        z = self.f(x)
        return z, self.head(z)


def test_domain_bn_on_a_model_without_batchnorm_is_a_config_error(tiny_data):
    d = load_domains(DataConfig(path=str(tiny_data)))
    cfg = TrainConfig(epochs=2, warmup=1, batch_size=16, threads=1)
    for loss in (LossConfig(method="dan", domain_bn=True), LossConfig(method="adabn")):
        with pytest.raises(ConfigError, match="no BatchNorm layer") as e:
            fit(NoBN(), d.train_s, d.train_t, cfg, loss=loss)
        assert "\n" not in str(e.value)
    # robust SIDDA's default keeps working (a no-op there), as before
    LossConfig(variant="robust").check_model(NoBN())
    assert not batchnorm_layers(NoBN())


def test_domain_bn_on_source_only_exits_2_before_anything_is_written(tiny_config, tmp_path,
                                                                     capsys):
    from sidda.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config.to_yaml())
    for sets in (["loss.method=source_only", "loss.domain_bn=true"],
                 ["loss.method=adabn", "loss.domain_bn=false"]):
        assert main(["train", "--config", str(cfg), "--set", *sets]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "loss.domain_bn" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_a_fit_with_domain_bn_saves_target_statistics_that_evaluation_uses(tiny_data,
                                                                          tmp_path):
    """End to end for a baseline with ``domain_bn``: the checkpoints hold the target
    statistics, and the target test predictions of ``evaluate`` are the model's with them."""
    from sidda import RunConfig
    from sidda.experiments import evaluate_run, load_run_model, train_run
    from sidda.runs import load_checkpoint

    cfg = RunConfig.from_dict({
        "name": "dan_dbn", "out_dir": str(tmp_path / "runs"), "data": {"path": str(tiny_data)},
        "model": {"name": "cnn", "latent_dim": 16}, "loss": {"method": "dan", "domain_bn": True},
        "train": {"epochs": 3, "warmup": 1, "batch_size": 8, "threads": 1}})
    run_dir = train_run(cfg)
    evaluate_run(run_dir, calibration=False, selection=False)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    model, _ = load_run_model(run_dir)
    for i, bn in enumerate(batchnorm_layers(model)):
        bn.running_mean.copy_(ckpt["loss"][f"domain_stats.t{i}_running_mean"])
        bn.running_var.copy_(ckpt["loss"][f"domain_stats.t{i}_running_var"])
    d = load_domains(DataConfig(path=str(tiny_data)), splits=("test",))
    with torch.no_grad():
        probs = torch.softmax(model.eval()(d.test_t.x)[1], 1).numpy()
    np.testing.assert_allclose(np.load(run_dir / "probs_target.npy"), probs, rtol=1e-4,
                               atol=1e-5)
    assert RunConfig.from_yaml(run_dir / "config.yaml").loss.domain_bn is True
