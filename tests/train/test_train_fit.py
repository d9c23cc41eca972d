import csv
import math

import pytest
import torch

from sidda import LossConfig, TrainConfig, build_model, fit
from sidda.datasets import ImageSet
from sidda.runs import load_checkpoint


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn", in_channels=1, num_classes=3, image_size=16)


@pytest.mark.parametrize("variant", ["paper", "robust"])
def test_sidda_fit_logs_everything_and_keeps_bounds(tiny_sets, tmp_path, variant):
    d = tiny_sets
    cfg = TrainConfig(epochs=3, warmup=1, batch_size=16, threads=1)
    loss = LossConfig(variant=variant)
    hist = fit(_model(), d.train_s, d.train_t, cfg, loss=loss, val_s=d.test_s, val_t=d.test_t,
               run_dir=tmp_path)
    phases = [e["phase"] for e in hist.epochs]
    assert phases == ["warmup", "sidda", "sidda"]
    da = [s for s in hist.steps if s["phase"] == "sidda"]
    assert len(da) == 2 * 3 and all(math.isfinite(s["da"]) and s["da"] >= -1e-6 for s in da)
    for s in da:
        assert s["blur"] == pytest.approx(max(loss.blur_factor * s["max_distance"], 0.01))
        ratio = 1.0 if variant == "robust" else 0.25  # the bound on eta_2 / eta_1
        assert s["eta_1"] > 0 and s["eta_2"] >= ratio * s["eta_1"] * (1 - 1e-6)
    # per-epoch means are true per-epoch means, not running means
    e2 = hist.epochs[2]
    assert e2["train_da"] == pytest.approx(sum(s["da"] for s in da[3:]) / 3)
    assert {"val_acc_s", "val_ce", "val_da", "val_total", "lr"} <= set(e2)
    assert hist.epochs[0]["val_da"] is None and e2["val_da"] is not None
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and "eta_1" in rows[0]
    for name in ("final", "best_val_acc", "best_val_loss"):
        assert (tmp_path / "checkpoints" / f"{name}.pt").is_file()
    # epochs are numbered 1..E everywhere: records, history.csv, best epochs, checkpoints
    assert [e["epoch"] for e in hist.epochs] == [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert sorted({s["epoch"] for s in hist.steps}) == [1, 2, 3]
    # selection is gated on the warm-up (epoch 1)
    assert hist.best["best_val_acc"] >= 2 and hist.best["best_val_loss"] >= 2
    assert hist.best["final"] == 3
    for name in ("final", "best_val_acc", "best_val_loss"):
        ckpt = load_checkpoint(tmp_path / "checkpoints" / f"{name}.pt")
        assert ckpt["epoch"] == hist.best[name] == ckpt["record"]["epoch"]
    assert not list((tmp_path / "checkpoints").glob("epoch_*.pt"))  # kept on request only


def test_source_only_needs_no_target_and_learns(tiny_sets):
    d = tiny_sets
    cfg = TrainConfig(epochs=6, warmup=0, batch_size=16, lr=1e-2, milestones=(100,), threads=1)
    hist = fit(_model(), d.train_s, None, cfg, loss=LossConfig(method="source_only"),
               val_s=d.test_s)
    assert all(e["phase"] == "source_only" for e in hist.epochs)
    assert hist.epochs[-1]["train_ce"] < hist.epochs[0]["train_ce"]
    assert hist.epochs[-1]["val_acc_s"] > 0.9


def test_same_seed_same_weights(tiny_sets):
    d = tiny_sets
    cfg = TrainConfig(epochs=2, warmup=1, batch_size=16, seed=5, threads=1)
    ws = []
    for _ in range(2):
        m = _model(1)
        fit(m, d.train_s, d.train_t, cfg)
        ws.append(torch.cat([p.flatten() for p in m.state_dict().values()
                             if p.is_floating_point()]))
    assert torch.equal(ws[0], ws[1])


def test_unequal_domain_sizes_cycle_the_target(tiny_sets):
    d = tiny_sets
    small_t = d.train_t.subset(torch.arange(10))
    cfg = TrainConfig(epochs=2, warmup=0, batch_size=16, threads=1)
    hist = fit(_model(), d.train_s, small_t, cfg)
    assert len(hist.steps) == 2 * 3  # the source (48 images) defines the epoch


def test_early_stopping_counts_post_warmup_epochs(tiny_sets):
    d = tiny_sets
    cfg = TrainConfig(epochs=30, warmup=2, batch_size=16, early_stopping=1, lr=1e-6,
                      threads=1)
    hist = fit(_model(), d.train_s, d.train_t, cfg, val_s=d.test_s, val_t=d.test_t)
    assert hist.stopped_early
    assert 3 <= len(hist.epochs) < 30


def test_milestone_defaults_and_validation():
    assert TrainConfig(epochs=50).resolved_milestones() == [25, 40]
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(epochs=3, warmup=3)
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(40, 25))


def test_needs_labels_and_target(tiny_sets):
    d = tiny_sets
    with pytest.raises(ValueError, match="labels"):
        fit(_model(), ImageSet(d.train_s.x, None), d.train_t, TrainConfig(epochs=2, warmup=1))
    with pytest.raises(ValueError, match="target"):
        fit(_model(), d.train_s, None, TrainConfig(epochs=2, warmup=1))


def test_resume_continues_from_last_checkpoint_and_checks_the_config(tiny_sets, tmp_path):
    d = tiny_sets
    cfg = TrainConfig(epochs=2, warmup=1, batch_size=16, threads=1)
    fit(_model(), d.train_s, d.train_t, cfg, run_dir=tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["state"]["finished"] and last["state"]["epoch"] == 2
    assert {"model", "loss", "optimizer", "scheduler", "rng", "history", "config"} <= set(last)
    # a finished run resumes to itself without training again
    hist = fit(_model(), d.train_s, d.train_t, cfg, run_dir=tmp_path, resume=True)
    assert len(hist.epochs) == 2 and hist.best["final"] == 2
    with pytest.raises(ValueError, match=r"another config \(train.lr: 0.01 in the checkpoint"):
        fit(_model(), d.train_s, d.train_t, TrainConfig(epochs=2, warmup=1, batch_size=16,
                                                        lr=0.02), run_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="run_dir"):
        fit(_model(), d.train_s, d.train_t, cfg, resume=True)


def test_epoch_checkpoints_are_kept_on_request(tiny_sets, tmp_path):
    """train.keep_epoch_checkpoints: one model file per epoch, the same format as final.pt,
    with that epoch's validation record; the last one holds the final weights."""
    d = tiny_sets
    cfg = TrainConfig(epochs=3, warmup=1, batch_size=16, threads=1, keep_epoch_checkpoints=True)
    model = _model()
    hist = fit(model, d.train_s, d.train_t, cfg, val_s=d.test_s, val_t=d.test_t,
               run_dir=tmp_path)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("epoch_*.pt")) == [
        "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]
    final = load_checkpoint(folder / "final.pt")
    for rec in hist.epochs:
        ckpt = load_checkpoint(folder / f"epoch_{rec['epoch']:04d}.pt")
        assert ckpt.keys() == final.keys() and ckpt["epoch"] == rec["epoch"]
        assert ckpt["record"] == rec and ckpt["record"]["val_acc_s"] is not None
        assert ckpt["loss"].keys() == final["loss"].keys()
    last, first = (load_checkpoint(folder / f"epoch_{e:04d}.pt") for e in (3, 1))
    for k, v in final["model"].items():
        assert torch.equal(last["model"][k], v), k
    assert any(not torch.equal(first["model"][k], v) for k, v in final["model"].items())
    model.load_state_dict(first["model"])  # a usable model of epoch 1
