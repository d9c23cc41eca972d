"""`data check --normalize MODE`: the images as the model will see them, per domain and band,
and the rules that warn where the domains differ by construction."""

import numpy as np
import pytest
import torch

from sidda import DataConfig
from sidda.cli import main
from sidda.datasets import check_normalisation, normalisation_report, write_layout
from sidda.datasets.normalize import scale_flags
from sidda.errors import InputError


def _noisy(rng, n=20, c=1, size=16, sigma=0.05, level=1.0):
    """Images (N, C, H, W): a bright square on Gaussian noise."""
    x = rng.normal(0, sigma, (n, c, size, size))
    x[:, :, 4:12, 4:12] += level
    return x


def _noise_free(n=20, c=1, size=16, level=1.0):
    x = np.zeros((n, c, size, size))
    x[:, :, 4:12, 4:12] = level
    return x


def test_table_matches_a_numpy_computation():
    rng = np.random.default_rng(0)
    x_s, x_t = _noisy(rng, c=2), 3 * _noisy(rng, c=2) + 1
    rep = normalisation_report(x_s, x_t, mode="half")
    assert [(r.domain, r.band) for r in rep.table] == [("source", 0), ("source", 1),
                                                       ("target", 0), ("target", 1)]
    for r in rep.table:
        v = ((x_s if r.domain == "source" else x_t)[:, r.band].astype(np.float32) - 0.5) / 0.5
        assert r.mean == pytest.approx(v.mean(dtype=np.float64), abs=1e-6)
        assert r.std == pytest.approx(v.std(dtype=np.float64), rel=1e-5)
        assert (r.min, r.max) == pytest.approx((v.min(), v.max()))
        assert r.floored == 0 and r.fallback == 0
    assert rep.n_images == {"source": 20, "target": 20}


def test_scale_flags_agree_with_a_literal_loop():
    rng = np.random.default_rng(1)
    x = np.concatenate([_noisy(rng, n=3, c=2), _noise_free(n=3, c=2)])
    x[0, 1] = 7.0  # a constant band
    got_floor, got_std = scale_flags(torch.from_numpy(x).float(), "asinh")
    for i in range(len(x)):
        for c in range(2):
            v = x[i, c].astype(np.float32).ravel()
            eps = max(1e-6 * np.abs(v).max(), np.finfo(np.float32).tiny)
            mad = 1.4826 * np.median(np.abs(v - np.median(v)))
            scale = mad if mad > eps else v.std()
            assert bool(got_std[i, c]) == (not mad > eps)
            assert bool(got_floor[i, c]) == (scale <= eps)
    assert got_floor[0, 1] and not got_floor[0, 0] and got_std[3:].all()


def test_fluxes_100x_apart_under_half_warn_and_2x_do_not():
    rng = np.random.default_rng(2)
    x_s = _noisy(rng)
    far = normalisation_report(x_s, 100 * _noisy(rng), mode="half")
    assert len(far.warnings) == 1 and "band 0: under normalize=half" in far.warnings[0]
    assert "apart" in far.warnings[0]
    assert normalisation_report(x_s, 2 * _noisy(rng), mode="half").warnings == []
    # a per-image mode takes the units out: no warning for the same 100x
    assert normalisation_report(x_s, 100 * _noisy(rng), mode="per_band_standard").warnings == []


def test_a_noise_free_source_under_asinh_warns():
    rng = np.random.default_rng(3)
    rep = normalisation_report(_noise_free(), _noisy(rng), mode="asinh")
    src, tgt = rep.table
    assert src.fallback == 1.0 and tgt.fallback == 0.0
    assert any("asinh scales 100% of the source images and 0% of the target" in w
               for w in rep.warnings)
    both_noisy = normalisation_report(_noisy(rng), _noisy(rng), mode="asinh")
    assert both_noisy.warnings == []
    both_clean = normalisation_report(_noise_free(), _noise_free(level=2.0), mode="asinh")
    assert not any("asinh scales" in w for w in both_clean.warnings)


def test_constant_bands_in_one_domain_warn():
    rng = np.random.default_rng(4)
    x_s, x_t = _noisy(rng, c=2), _noisy(rng, c=2)
    x_t[:, 1] = 5.0  # the target's band 1 is blank
    rep = normalisation_report(x_s, x_t, mode="per_band_standard")
    assert rep.table[3].floored == 1.0 and rep.table[1].floored == 0.0
    assert any(w.startswith("band 1: 0% of the source images and 100% of the target ones are "
                            "constant") for w in rep.warnings)
    assert not any(w.startswith("band 0") for w in rep.warnings)
    x_t[2:, 1] = rng.normal(size=(18, 16, 16))  # 2 of 20 blank: a gap of 0.1, warned
    assert any("10% of the target ones are constant" in w
               for w in normalisation_report(x_s, x_t, mode="per_band_standard").warnings)
    x_t[1, 1] = rng.normal(size=(16, 16))  # 1 of 20 blank: below the gap
    assert normalisation_report(x_s, x_t, mode="per_band_standard").warnings == []


def test_bad_arguments_are_input_errors():
    x = np.zeros((2, 1, 8, 8))
    with pytest.raises(InputError, match="unknown normalisation 'log'"):
        normalisation_report(x, x, mode="log")
    with pytest.raises(InputError, match="same bands"):
        normalisation_report(x, np.zeros((2, 3, 8, 8)), mode="half")


def _folder(root, x_s, x_t):
    y = np.arange(len(x_s)) % 2
    return write_layout(root, {"x_train_s": x_s, "y_train_s": y, "x_test_s": x_s[:4],
                               "y_test_s": y[:4], "x_train_t": x_t, "x_test_t": x_t[:4]})


def test_check_normalisation_reads_a_folder_and_samples(tmp_path):
    rng = np.random.default_rng(5)
    x_s, x_t = _noisy(rng, n=30), 100 * _noisy(rng, n=30)
    root = _folder(tmp_path / "d", np.moveaxis(x_s, 1, -1), np.moveaxis(x_t, 1, -1))  # NHWC
    rep = check_normalisation(DataConfig(path=str(root)))
    direct = normalisation_report(x_s, x_t, mode="half")
    assert [round(r.std, 4) for r in rep.table] == [round(r.std, 4) for r in direct.table]
    assert rep.warnings == direct.warnings and len(rep.warnings) == 1
    few = check_normalisation(DataConfig(path=str(root)), mode="asinh", max_images=5)
    assert few.n_images == {"source": 5, "target": 5} and few.mode == "asinh"


def test_data_check_normalize_prints_the_table_and_warnings(tmp_path, capsys):
    rng = np.random.default_rng(6)
    root = _folder(tmp_path / "d", _noise_free(), _noisy(rng))
    assert main(["data", "check", str(root), "--normalize", "asinh"]) == 0
    out = capsys.readouterr().out
    assert "after normalize=asinh (training images: 20 source, 20 target)" in out
    assert "by std" in out and "warning: band 0: asinh scales 100% of the source" in out
    assert main(["data", "check", str(root), "--normalize", "log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sidda: error: --normalize must be one of half, none, per_band_standard, "
                   "per_band_minmax, asinh, got 'log'"]
