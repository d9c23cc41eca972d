"""Domain-specific BatchNorm statistics with plain ``nn.BatchNorm`` layers (the GPU path)."""

from __future__ import annotations

import torch
from torch import nn

from sidda.methods.domain_bn import DomainStats, load_target_stats


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
