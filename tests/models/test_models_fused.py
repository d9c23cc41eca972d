"""The CPU fast path (fused channels-last blocks) against the modules it replaces."""

import copy

import pytest
import torch
import torch.nn.functional as F

from sidda import build_model


def _perturb_batchnorm(model):
    """Move gamma/beta off their init, with some decreasing channels (gamma < 0)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_bn = "batch_norm" in name or any(name.startswith(f"blocks.{i}.") for i in (1, 6, 11))
            if is_bn and name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif is_bn and name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def _run(model, x, y, *, fused):


    m = copy.deepcopy(model)
    m.fused = fused
    m.train()
    z, logits = m(x)
    F.cross_entropy(logits, y).backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    stats = {n: b.clone() for n, b in m.named_buffers() if "running" in n}
    m.eval()
    with torch.no_grad():
        _, eval_logits = m(x)
    return z, logits, grads, stats, eval_logits


def _assert_same(a, b, *, rtol, atol, skip=()):
    for u, v in zip(a[:2] + a[4:], b[:2] + b[4:], strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        if k in skip:  # conv biases before BatchNorm: zero gradient, rounding noise only
            continue
        scale = a[2][k].abs().max()
        torch.testing.assert_close(b[2][k] / scale, a[2][k] / scale, rtol=rtol, atol=atol, msg=k)
    for k in a[3]:
        torch.testing.assert_close(b[3][k], a[3][k], rtol=rtol, atol=atol, msg=k)


@pytest.mark.parametrize("size", [32, 20])  # 20 -> 10 -> 5 -> 2: an odd map drops a row
def test_fused_cnn_is_the_same_function_float64(size):
    m = build_model("cnn", in_channels=3, num_classes=4, image_size=size, dropout=0.0).double()
    _perturb_batchnorm(m)
    x = torch.randn(6, 3, size, size, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    skip = {"blocks.0.bias", "blocks.5.bias", "blocks.10.bias"}
    _assert_same(_run(m, x, y, fused=False), _run(m, x, y, fused=True), rtol=1e-9, atol=1e-11,
                 skip=skip)


def test_fused_cnn_float32_agrees_to_rounding():
    m = build_model("cnn", in_channels=1, num_classes=3, image_size=32, dropout=0.0)
    _perturb_batchnorm(m)
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 3, (16,))
    skip = {"blocks.0.bias", "blocks.5.bias", "blocks.10.bias"}
    _assert_same(_run(m, x, y, fused=False), _run(m, x, y, fused=True), rtol=1e-4, atol=1e-5,
                 skip=skip)


@pytest.mark.parametrize("name", ["d4", "c1"])
def test_fused_escnn_is_the_same_function(name):
    # escnn's GroupPooling returns float32 whatever the input, so compare in float32
    m = build_model(name, in_channels=1, num_classes=3, image_size=16, dropout=0.0)
    _perturb_batchnorm(m)
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 3, (4,))
    a, b = _run(m, x, y, fused=False), _run(m, x, y, fused=True)
    _assert_same(a, b, rtol=1e-4, atol=1e-5, skip={"blocks.0.bias", "blocks.5.bias",
                                                   "blocks.10.bias"})


def test_fused_dropout_drops_at_rate_p_and_rescales():
    torch.manual_seed(0)
    m = build_model("cnn", in_channels=1, num_classes=3, image_size=64, dropout=0.3)
    m.blocks = m.blocks[:5]  # one block: its output is conv -> BN -> ReLU -> pool -> dropout
    x = torch.randn(32, 1, 64, 64)
    m.train()
    torch.manual_seed(5)
    y = m.features(x)
    torch.manual_seed(5)
    assert torch.equal(y, m.features(x))  # the global generator drives the masks
    m.blocks[4].eval()  # dropout off, batch statistics kept
    y0 = m.features(x)
    on = y0 > 0
    kept = y[on] != 0
    assert abs(1 - float(kept.float().mean()) - 0.3) < 0.01  # 8 x 32 x 32 x 32 = 262k draws
    torch.testing.assert_close(y[on][kept], y0[on][kept] / 0.7, rtol=1e-4, atol=1e-5)
    assert not torch.any(y[~on])


def test_fast_path_keeps_the_checkpoint_layout():
    a = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    b = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    b.fused = False
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x)[1], b.eval()(x)[1], rtol=1e-5, atol=1e-6)
