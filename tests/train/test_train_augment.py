"""``train.augment``: each transform against torch's own flips, rotations and rolls, the draws'
reproducibility and sharding, and fit(): augmented source batches, resumed bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sidda import DataConfig, TrainConfig, fit, load_domains
from sidda.models import build_model
from sidda.runs import load_checkpoint
from sidda.train.augment import augment_batch, draw, translate_range
from sidda.train.collectives import DistContext, shard_indices


def _images(n=9, c=2, s=6):
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", ["flip", "rot90", "dihedral", "translate"])
def test_each_image_gets_its_drawn_transform(name):
    x = _images()
    y = augment_batch(x, [name], seed=4, epoch=2, step=5)
    d = draw([name], len(x), seed=4, epoch=2, step=5, side=6)[name]
    for i in range(len(x)):
        want = x[i]
        if name == "flip":
            want = want.flip(2) if d[i, 0] else want
            want = want.flip(1) if d[i, 1] else want
        elif name == "rot90":
            want = torch.rot90(want, int(d[i]), dims=(1, 2))
        elif name == "dihedral":
            want = torch.rot90(want.flip(2) if d[i, 1] else want, int(d[i, 0]), dims=(1, 2))
        else:
            want = torch.roll(want, (int(d[i, 0]), int(d[i, 1])), dims=(1, 2))
        assert torch.equal(y[i], want), (name, i)
    assert not torch.equal(y, x)


def test_the_draws_cover_their_range_uniformly():
    n = 8000
    d = draw(["flip", "rot90", "dihedral", "translate"], n, seed=0, epoch=0, step=0, side=100)
    assert d["flip"].float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert np.bincount(d["rot90"].numpy(), minlength=4) / n == pytest.approx([0.25] * 4,
                                                                              abs=0.02)
    group = (d["dihedral"][:, 0] + 4 * d["dihedral"][:, 1]).numpy()
    assert np.bincount(group, minlength=8) / n == pytest.approx([1 / 8] * 8, abs=0.015)
    s = translate_range(100)
    assert s == 10 and d["translate"].min() == -s and d["translate"].max() == s
    assert translate_range(8) == 1


def test_draws_depend_on_seed_epoch_and_step_only_and_shards_match_one_process():
    x = _images(n=7)
    a = augment_batch(x, ["dihedral", "translate"], seed=1, epoch=3, step=2)
    b = augment_batch(x, ["dihedral", "translate"], seed=1, epoch=3, step=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, ["dihedral", "translate"], seed=1, epoch=3,
                                            step=3))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    augment_batch(x, ["flip"], seed=1, epoch=0, step=0)
    assert torch.equal(torch.get_rng_state(), before)  # dropout's stream is untouched
    parts = []
    for r in range(2):  # two ranks: each transforms its rows of the global batch
        ctx = DistContext(rank=r, world_size=2)
        rows = shard_indices(torch.arange(7), ctx)
        parts.append(augment_batch(x[rows], ["dihedral", "translate"], seed=1, epoch=3, step=2,
                                   rows=rows, n=7))
    assert torch.equal(torch.cat(parts), a)
    assert augment_batch(x, [], seed=1, epoch=0, step=0) is x
    with pytest.raises(ValueError, match="square"):
        augment_batch(torch.zeros(2, 1, 4, 6), ["rot90"], seed=0, epoch=0, step=0)


def test_unknown_or_repeated_augmentations_are_refused():
    assert TrainConfig(augment=["flip", "translate"]).augment == ("flip", "translate")
    with pytest.raises(ValueError, match="unknown augmentation 'noise'"):
        TrainConfig(augment=["noise"])
    with pytest.raises(ValueError, match="twice"):
        TrainConfig(augment=["flip", "flip"])
    with pytest.raises(ValueError, match="must be a list"):
        TrainConfig(augment="flip")


def test_augment_exits_2_on_the_command_line(tiny_config, tmp_path, capsys):
    from sidda.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config.to_yaml())
    assert main(["train", "--config", str(cfg), "--set", "train.augment=[flip, mixup]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown augmentation 'mixup'" in err[0]
    assert not (tmp_path / "runs").exists()


class _Crash(Exception):
    pass


def test_fit_augments_the_source_and_resumes_bit_identically(tiny_data, tmp_path):
    """The steps see other images than without augmentation (the CE differs from the first
    step on), and a run stopped mid-epoch and resumed ends with the same weights."""
    d = load_domains(DataConfig(path=str(tiny_data)))
    aug = TrainConfig(epochs=3, warmup=1, batch_size=16, threads=1,
                      augment=["dihedral", "translate"])

    def model():
        torch.manual_seed(0)
        return build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)

    plain = fit(model(), d.train_s, d.train_t, TrainConfig(epochs=3, warmup=1, batch_size=16,
                                                           threads=1))
    ref = fit(model(), d.train_s, d.train_t, aug, run_dir=tmp_path / "ref")
    assert ref.steps[0]["ce"] != plain.steps[0]["ce"]

    def crash(event, row):
        if event == "step" and row["step"] == 4:
            raise _Crash

    with pytest.raises(_Crash):
        fit(model(), d.train_s, d.train_t, aug, run_dir=tmp_path / "cut", callbacks=[crash])
    resumed = fit(model(), d.train_s, d.train_t, aug, run_dir=tmp_path / "cut", resume=True)
    assert [r["ce"] for r in resumed.steps] == [r["ce"] for r in ref.steps]
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "final.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
