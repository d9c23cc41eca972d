"""AdaBN: the target statistics against a NumPy hand computation, source-only training bit for
bit, and the target statistics reaching every checkpoint, evaluation and prediction."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn
from torch.nn import functional as F

from sidda import DataConfig, LossConfig, RunConfig, TrainConfig, fit, load_domains
from sidda.methods import build_method
from sidda.methods.adabn import AdaBN, estimate_target_stats
from sidda.methods.domain_bn import batchnorm_layers
from sidda.models import build_model
from sidda.runs import load_checkpoint


class TwoBN(nn.Module):
    """conv -> BatchNorm2d -> ReLU -> dropout -> linear -> BatchNorm1d (latent) -> logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn1 = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)
        self.drop = nn.Dropout(0.5)
        self.lin, self.bn2 = nn.Linear(2 * 4 * 4, 3), nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 2)
        with torch.no_grad():  # affine parameters and running statistics that matter
            for bn in (self.bn1, self.bn2):
                bn.weight.uniform_(0.5, 2.0)
                bn.bias.uniform_(-1.0, 1.0)
                bn.running_mean.uniform_(-1.0, 1.0)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        h = self.drop(F.relu(self.bn1(self.conv(x))))  # (B, 2, 4, 4)
        z = self.bn2(self.lin(h.flatten(1)))  # (B, 3)
        return z, self.head(z)


def _numpy_adabn(net, x, batch_size):
    """The module docstring's estimator, literally: layer 1 on the conv outputs of all images;
    layer 2 on the inputs it gets when layer 1 normalises each batch with its own statistics."""
    w, b = net.conv.weight.detach().numpy(), net.conv.bias.detach().numpy()
    win = sliding_window_view(x[:, 0], (3, 3), axis=(1, 2))  # (N, 4, 4, 3, 3)
    c = np.einsum("nijkl,okl->noij", win, w[:, 0]) + b[None, :, None, None]  # (N, 2, 4, 4)
    g1, b1 = net.bn1.weight.detach().numpy(), net.bn1.bias.detach().numpy()
    inputs2 = []
    for s in range(0, len(x), batch_size):
        cb = c[s:s + batch_size]
        m, v = cb.mean((0, 2, 3)), cb.var((0, 2, 3))  # biased: as training normalises
        h = (cb - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + net.bn1.eps)
        h = np.maximum(h * g1[None, :, None, None] + b1[None, :, None, None], 0)
        lw, lb = net.lin.weight.detach().numpy(), net.lin.bias.detach().numpy()
        inputs2.append(h.reshape(len(cb), -1) @ lw.T + lb)
    a2 = np.concatenate(inputs2)  # (N, 3)
    return [(c.mean((0, 2, 3)), c.var((0, 2, 3), ddof=1)), (a2.mean(0), a2.var(0, ddof=1))]


def test_target_statistics_against_a_numpy_hand_computation():
    net = TwoBN().double()
    x = 3 + 2 * torch.randn(10, 1, 6, 6, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    stats = estimate_target_stats(net, x, batch_size=4, device="cpu")  # batches 4, 4, 2
    want = _numpy_adabn(net, x.numpy(), 4)
    for i, (mean, var) in enumerate(want):
        np.testing.assert_allclose(getattr(stats, f"t{i}_running_mean").numpy(), mean,
                                   rtol=1e-10)
        np.testing.assert_allclose(getattr(stats, f"t{i}_running_var").numpy(), var,
                                   rtol=1e-10)
        assert int(getattr(stats, f"t{i}_num_batches_tracked")) == 3
    # the model's own statistics, weights and mode are untouched
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert net.training
    # BatchNorm's own cumulative average (momentum None) of the batches' variances is another
    # number: the comparison above tells the pooled estimate from it
    c = np.concatenate([net.conv(x[s:s + 4]).detach().numpy() for s in (0, 4, 8)])
    cma = np.mean([c[s:s + 4].var((0, 2, 3), ddof=1) for s in (0, 4, 8)], axis=0)
    assert np.abs(cma - want[0][1]).max() > 1e-2
    # in eval mode inside target(), the first layer normalises the target images with them:
    # its outputs average to its bias over the target set
    net.eval()
    seen = []
    net.bn1.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad(), stats.target():
        net(x)
    np.testing.assert_allclose(seen[0].mean((0, 2, 3)).numpy(), net.bn1.bias.detach().numpy(),
                               atol=1e-9)


def test_escnn_and_the_fused_cnn_reach_every_batchnorm_layer():
    """sidda's CPU fast path and escnn's InnerBatchNorm: every layer is estimated, and the
    first layer (fed by the images alone) has the pooled statistics of its conv outputs."""
    x = 2 + torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for name in ("cnn", "c4"):
        torch.manual_seed(0)
        model = build_model(name, in_channels=1, num_classes=3, image_size=16, latent_dim=8)
        stats = estimate_target_stats(model, x, batch_size=5, device="cpu")
        layers = batchnorm_layers(model)
        for i, bn in enumerate(layers):
            assert not torch.equal(getattr(stats, f"t{i}_running_mean"), bn.running_mean), i
        if name == "cnn":
            with torch.no_grad():
                c = model.blocks[0](x).double()  # (N, 8, 16, 16)
            torch.testing.assert_close(stats.t0_running_mean, c.mean((0, 2, 3)).float())
            torch.testing.assert_close(stats.t0_running_var,
                                       c.var((0, 2, 3), unbiased=True).float())
        assert getattr(model, "fused", True)  # the switch is back


@pytest.fixture
def sets(tiny_data):
    return load_domains(DataConfig(path=str(tiny_data)))


def _cnn():
    torch.manual_seed(0)
    return build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)


def test_adabn_trains_as_source_only_then_adds_target_statistics(sets, tmp_path):
    d = sets
    cfg = TrainConfig(epochs=3, warmup=1, batch_size=16, threads=1)
    runs = {}
    for method in ("source_only", "adabn"):
        model = _cnn()
        hist = fit(model, d.train_s, d.train_t, cfg, loss=LossConfig(method=method),
                   val_s=d.test_s, val_t=d.test_t, run_dir=tmp_path / method)
        runs[method] = (model, hist, load_checkpoint(tmp_path / method / "checkpoints" /
                                                     "final.pt"))
    (_, h_so, c_so), (m_ab, h_ab, c_ab) = runs["source_only"], runs["adabn"]
    assert h_ab.steps == h_so.steps  # the same training, step for step
    assert [r["phase"] for r in h_ab.epochs] == ["source_only"] * 3
    for k, v in c_so["model"].items():  # weights and source statistics: bit for bit
        assert torch.equal(c_ab["model"][k], v), k
    assert c_so["loss"] is None and len(c_ab["loss"]) == 3 * 3
    want = estimate_target_stats(m_ab, d.train_t.x, batch_size=16, device="cpu")
    for k, v in want.state_dict().items():
        assert torch.equal(c_ab["loss"][f"domain_stats.{k}"], v), k
    # a finished run resumes to nothing (its target statistics load back)
    again = fit(_cnn(), d.train_s, d.train_t, cfg, loss=LossConfig(method="adabn"),
                run_dir=tmp_path / "adabn", resume=True)
    assert again.steps == h_ab.steps


@pytest.mark.parametrize("net", ["cnn", "c4"])  # escnn: eval-mode filter caches (a d4 bug)
def test_every_checkpoint_gets_the_target_statistics_of_its_own_weights(net, tiny_data,
                                                                       tmp_path):
    from sidda.experiments import evaluate_run, load_run_model, train_run
    from sidda.experiments.data import prepare_data
    from sidda.experiments.prediction import predict_run

    cfg = RunConfig.from_dict({
        "name": "adabn", "out_dir": str(tmp_path / "runs"), "data": {"path": str(tiny_data)},
        "model": {"name": net, "latent_dim": 16}, "loss": {"method": "adabn"},
        "train": {"epochs": 3, "warmup": 1, "batch_size": 8, "threads": 1,
                  "keep_epoch_checkpoints": True}})
    run_dir = train_run(cfg)
    d = load_domains(DataConfig(path=str(tiny_data)))
    train_t = prepare_data(cfg)[1]["train_t"]  # the run's target training split
    folder = run_dir / "checkpoints"
    names = sorted(p.stem for p in folder.glob("*.pt") if p.stem != "last")
    assert {"final", "best_val_acc", "epoch_0001", "epoch_0002"} <= set(names)
    per_weights = {}
    for name in names:
        ckpt = load_checkpoint(folder / f"{name}.pt")
        model = build_model(net, in_channels=1, num_classes=3, image_size=16, latent_dim=16)
        model.load_state_dict(ckpt["model"])
        want = estimate_target_stats(model, train_t.x, batch_size=8, device="cpu")
        for k, v in want.state_dict().items():
            assert torch.equal(ckpt["loss"][f"domain_stats.{k}"], v), (name, k)
        per_weights[name] = ckpt["loss"]["domain_stats.t0_running_mean"]
    assert not torch.equal(per_weights["epoch_0001"], per_weights["final"])
    # evaluation and prediction of target images use them; source images do not
    evaluate_run(run_dir, calibration=False, selection=False)
    target, _ = load_run_model(run_dir, domain="target")
    source, _ = load_run_model(run_dir, domain="source")
    torch.testing.assert_close(batchnorm_layers(target)[0].running_mean, per_weights["final"])
    with torch.no_grad():
        probs_t = torch.softmax(target(d.test_t.x)[1], 1).numpy()
        probs_s = torch.softmax(source(d.test_s.x)[1], 1).numpy()
    np.testing.assert_allclose(np.load(run_dir / "probs_target.npy"), probs_t, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(np.load(run_dir / "probs_source.npy"), probs_s, rtol=1e-4,
                               atol=1e-5)
    x_file = tiny_data / "test" / "x_test_noise.npy"
    out = tmp_path / "pred.csv"
    predict_run(run_dir, x_file, out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    got = np.array([[float(r[f"p_{c}"]) for c in ("a", "b", "c")] for r in rows])
    np.testing.assert_allclose(got, probs_t, rtol=1e-4, atol=1e-5)


def test_adabn_has_no_option_and_holds_no_statistics_before_training():
    method = build_method(LossConfig(method="adabn"), latent_dim=8)
    assert isinstance(method, AdaBN) and not method.aligns and method.state_dict() == {}
    model = _cnn()
    method.attach(model)
    state = estimate_target_stats(model, torch.randn(4, 1, 16, 16), batch_size=4).state_dict()
    method.load_state_dict({f"domain_stats.{k}": v for k, v in state.items()})
    assert method.domain_stats is not None and len(method.state_dict()) == 9
    method.load_state_dict({})
    assert method.domain_stats is None
    with pytest.raises(ValueError, match="option of"):
        LossConfig(method="adabn", weight=1.0)
