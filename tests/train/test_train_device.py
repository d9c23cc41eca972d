"""Tests of sidda.train.device and of fit's GPU options: bf16 autocast (CPU bf16 standing in
for CUDA where no GPU is present), channels_last, device names, and the CUDA runs themselves
(marked ``gpu``)."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from train_nets import NoBatchNorm, global_batch, paper_cnn, params, sidda_on_ranks

from sidda import LossConfig, TrainConfig, fit
from sidda.cli import main
from sidda.losses import SIDDALoss
from sidda.methods.sidda import SIDDAMethod
from sidda.models import build_model
from sidda.train import train_step
from sidda.train.collectives import DistContext
from sidda.train.config import DistConfig
from sidda.train.device import autocast_context, to_device, use_channels_last
from sidda.train.distributed import prepare_model, unwrap


def test_autocast_context_logic(monkeypatch):
    assert isinstance(autocast_context("cpu"), contextlib.nullcontext)
    assert isinstance(autocast_context("cuda", enabled=False), contextlib.nullcontext)
    cpu = autocast_context("cpu", cpu_bf16=True)
    assert isinstance(cpu, torch.autocast) and cpu.fast_dtype == torch.bfloat16
    with warnings.catch_warnings():  # torch warns that CUDA is absent when it is
        warnings.simplefilter("ignore")
        cuda = autocast_context(torch.device("cuda"))
    assert isinstance(cuda, torch.autocast)
    assert (cuda.device, cuda.fast_dtype) == ("cuda", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.warns(UserWarning, match="does not support bf16"):
        fallback = autocast_context("cuda")
    assert isinstance(fallback, contextlib.nullcontext)


def test_to_device_and_channels_last():
    x, y = torch.randn(4, 1, 16, 16), torch.arange(4)
    xc = to_device(x, torch.device("cpu"), channels_last=True)
    assert xc.is_contiguous(memory_format=torch.channels_last) and torch.equal(xc, x)
    assert torch.equal(to_device(y, torch.device("cpu"), channels_last=True), y)
    model = paper_cnn().eval()
    fast = prepare_model(paper_cnn().eval(), DistContext(), channels_last=True)
    assert unwrap(fast) is fast  # one process: no DDP wrapper
    torch.testing.assert_close(fast(xc)[1], model(x)[1], rtol=1e-5, atol=1e-6)


def test_dist_config():
    assert DistConfig().da_scope == "global"
    for scope in ("shard", "local"):  # "local" (per-rank Sinkhorn terms) was removed
        with pytest.raises(ValueError, match="da_scope"):
            DistConfig(da_scope=scope)
    assert not use_channels_last(DistConfig(), torch.device("cpu"))
    assert use_channels_last(DistConfig(), torch.device("cuda"))
    assert not use_channels_last(DistConfig(bf16=False), torch.device("cuda"))
    assert use_channels_last(DistConfig(channels_last=True), torch.device("cpu"))


@pytest.mark.gpu
def test_bf16_forward_float32_loss_on_cuda():
    dev = torch.device("cuda")
    model = prepare_model(paper_cnn(), DistContext(device=dev), channels_last=True)
    criterion = SIDDALoss().to(dev)
    x_s, y_s, x_t = global_batch(8, 8)
    x = to_device(torch.cat([x_s, x_t]), dev, channels_last=True, pin_memory=True)
    with autocast_context(dev):
        z, logits = model(x)
    assert logits.dtype == torch.bfloat16
    out = sidda_on_ranks(criterion, logits[:8], y_s.to(dev), z[:8], z[8:],
                         DistContext(device=dev))
    assert out.da.dtype == torch.float32 and torch.isfinite(out.total)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


class Recorder(NoBatchNorm):
    """Records, at each training forward pass, whether CPU autocast is on and the logits'
    dtype."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        z, logits = super().forward(x)
        if self.training:
            self.seen.append((torch.is_autocast_enabled("cpu"), logits.dtype))
        return z, logits


def test_bf16_is_off_on_the_cpu_and_channels_last_reaches_fit(tiny_sets):
    d = tiny_sets
    cfg = TrainConfig(epochs=2, warmup=1, batch_size=16, threads=1)
    plain, fast = Recorder(), Recorder()
    # the paper variant (one pass per step): the robust one's small blur (0.2 x the latent
    # scale) turns NHWC's different rounding into ~1e-3 differences after a few steps
    paper = LossConfig(variant="paper")
    want = fit(plain, d.train_s, d.train_t, cfg, loss=paper, dist_cfg=DistConfig(bf16=False))
    got = fit(fast, d.train_s, d.train_t, cfg, loss=paper,
              dist_cfg=DistConfig(bf16=True, channels_last=True))
    # bf16 is asked for but the CPU gets none; the weights are NHWC (the stride of their
    # channel dimension is 1)
    assert plain.seen == fast.seen == [(False, torch.float32)] * 6
    w = fast.features[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and w.stride()[1] == 1
    for a, b in zip(got.steps, want.steps, strict=True):
        for key in ("ce", "da", "total", "grad_norm"):
            if b[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-4), key


def test_train_step_bf16_logic_on_the_cpu(monkeypatch):
    """The CUDA step's logic, with CPU bf16 autocast standing in: the forward pass runs in
    bf16, the loss in float32, and the step moves the weights and the etas."""
    import sidda.train.step

    monkeypatch.setattr(sidda.train.step, "autocast_context",
                        lambda device, enabled: autocast_context(device, enabled=enabled,
                                                                 cpu_bf16=True))
    model, criterion = paper_cnn(bn_eval=False), SIDDAMethod(eta_mode="faithful")
    dtypes = []
    model.register_forward_hook(lambda m, i, out: dtypes.append(out[1].dtype))
    opt = torch.optim.AdamW([{"params": model.parameters()}, *criterion.param_groups()], lr=1e-2)
    before = params(model)
    x_s, y_s, x_t = global_batch(8, 8)
    out = train_step(model, x_s, y_s, x_t, criterion=criterion, optimizer=opt, grad_clip=10.0,
                     dist_cfg=DistConfig(bf16=True))
    assert dtypes == [torch.bfloat16]
    assert out["skipped"] is None and all(
        isinstance(out[k], float) and torch.isfinite(torch.tensor(out[k]))
        for k in ("ce", "da", "total", "grad_norm"))
    assert any(not torch.equal(before[k], p) for k, p in model.named_parameters())
    assert criterion.loss.eta_1.item() != 1.0
    out = train_step(model, x_s, y_s, None, criterion=criterion, optimizer=opt, grad_clip=10.0,
                     dist_cfg=DistConfig(bf16=False))  # a warm-up step, in float32
    assert dtypes[-1] == torch.float32 and out["da"] is None and out["skipped"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_device_cuda_without_cuda_is_a_one_line_error(tiny_config, tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny_config.to_yaml())
    assert main(["train", "--config", str(cfg), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error: device 'cuda'")
    assert "CUDA is not available" in err[0] and "cpu" in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.gpu
def test_fit_on_cuda_with_bf16_and_channels_last(tiny_sets):
    d = tiny_sets
    model = build_model("cnn", in_channels=1, num_classes=3, image_size=16)
    dtypes = []
    model.register_forward_hook(lambda m, i, out: dtypes.append(out[1].dtype))
    cfg = TrainConfig(epochs=2, warmup=1, batch_size=16, device="cuda")
    hist = fit(model, d.train_s, d.train_t, cfg, val_s=d.test_s, val_t=d.test_t)
    assert torch.bfloat16 in dtypes  # the training forward passes
    assert all(s["skipped"] is None for s in hist.steps)
    assert all(torch.isfinite(torch.tensor(s["total"])) for s in hist.steps)
    assert next(model.parameters()).is_cuda
    assert hist.epochs[-1]["val_da"] is not None
