"""Any number of bands (NHWC and NCHW files) and the per-band normalisations of data.normalize."""

import numpy as np
import pytest
import torch

from sidda import DataConfig, build_model, load_domains
from sidda.datasets import (
    NORMALIZATIONS,
    DataError,
    ImageSet,
    MappedImages,
    load_split,
    normalize_bands,
    write_layout,
)
from sidda.errors import InputError

# ------------------------------------------------------------------ normalize_bands: reference


def _reference(x, mode):
    """A literal NumPy loop over images and bands, in float64."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            b = x[n, c]
            floor = max(1e-6 * np.abs(b).max(), np.finfo(np.float32).tiny)
            if mode == "half":
                out[n, c] = (b - 0.5) / 0.5
            elif mode == "none":
                out[n, c] = b
            elif mode == "per_band_standard":
                out[n, c] = (b - b.mean()) / max(b.std(), floor)
            elif mode == "per_band_minmax":
                out[n, c] = (b - b.min()) / max(b.max() - b.min(), floor)
            elif mode == "asinh":
                s = 1.4826 * np.median(np.abs(b - np.median(b)))
                if not s > floor:
                    s = b.std()
                out[n, c] = np.arcsinh(b / max(s, floor))
    return out


def _bands(seed=0, n=3, c=5, h=9, w=8):
    """Bands of very different scales and offsets, one constant band, one sparse band."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, c, h, w)) * np.array([1e-3, 1.0, 50.0, 1.0, 1.0])[:c, None, None]
    x += np.array([0.0, 7.0, -3.0, 0.0, 0.0])[:c, None, None]
    x[:, 3] = 2.5  # constant band: every rule maps it to a finite value
    x[:, 4] = 0.0
    x[:, 4, 2, 3] = 40.0  # sparse band: MAD 0, asinh falls back to the std
    return x.astype(np.float32)


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_normalize_bands_matches_a_numpy_loop(mode):
    x = _bands()
    got = normalize_bands(torch.from_numpy(x), mode)
    assert got.dtype == torch.float32 and got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), _reference(x, mode), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(normalize_bands(x, mode), got.numpy())  # arrays in, arrays out
    assert torch.isfinite(got).all()


def test_normalize_bands_is_per_image_and_per_band():
    x = torch.from_numpy(_bands(n=2))
    out = normalize_bands(x, "per_band_standard")
    assert torch.allclose(out[:, :3].mean((-1, -2)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(out[:, :3].std((-1, -2), correction=0), torch.ones(2, 3), atol=1e-4)
    assert torch.equal(out[:, 3], torch.zeros_like(out[:, 3]))  # constant band -> 0
    one = normalize_bands(x[1:], "asinh")  # an image's result does not depend on the others
    assert torch.allclose(normalize_bands(x, "asinh")[1:], one)
    mm = normalize_bands(x, "per_band_minmax")
    assert mm[:, :3].amin((-1, -2)).abs().max() < 1e-6
    assert (mm[:, :3].amax((-1, -2)) - 1).abs().max() < 1e-6


def test_asinh_median_of_an_even_count_is_numpys():
    x = np.array([[[[0.0, 1.0], [3.0, 10.0]]]], dtype=np.float32)  # median 2, MAD 1.5
    expected = np.arcsinh(x / (1.4826 * 1.5))
    np.testing.assert_allclose(normalize_bands(x, "asinh"), expected, rtol=1e-6)


def test_unknown_mode_is_one_line_naming_the_valid_ones():
    with pytest.raises(InputError) as e:
        normalize_bands(torch.zeros(1, 8, 8), "zscore")
    msg = str(e.value)
    assert "\n" not in msg and "'zscore'" in msg and all(m in msg for m in NORMALIZATIONS)
    with pytest.raises(ValueError, match="data.normalize must be one of half, none, per_band"):
        DataConfig(normalize="zscore")


# ------------------------------------------------------------------------ bands through loading


def _five_band_folder(root, *, channels_first=False, n=12, size=16, seed=0):
    """A 5-band data set; class k is bright in band k (3 classes); the target is offset."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("test", n // 2)):
        for dom, shift in (("s", 0.0), ("t", 0.3)):
            y = np.arange(count) % 3
            x = rng.normal(0.0, 0.1, (count, size, size, 5)).astype(np.float32) + shift
            x[np.arange(count), :, :, y] += 1.0
            arrays[f"x_{split}_{dom}"] = np.moveaxis(x, -1, 1) if channels_first else x
            arrays[f"y_{split}_{dom}"] = y
    return write_layout(root, arrays)


@pytest.mark.parametrize("channels_first", [False, True])
def test_five_band_set_loads_and_a_cnn_takes_it(tmp_path, channels_first):
    root = _five_band_folder(tmp_path / "d", channels_first=channels_first)
    d = load_domains(DataConfig(path=str(root)))
    assert isinstance(d.train_s, ImageSet) and d.in_channels == 5
    assert d.train_s.shape == d.test_t.shape == (5, 16, 16)
    raw = np.load(root / "train" / "x_train.npy")
    nchw = raw if channels_first else np.moveaxis(raw, -1, 1)
    assert torch.allclose(d.train_s.x, (torch.from_numpy(nchw) - 0.5) / 0.5)  # band k stays k
    model = build_model("cnn", in_channels=5, num_classes=d.num_classes, image_size=16).eval()
    with torch.no_grad():
        latent, logits = model(d.train_s.x[:4])  # (B, D), (B, K)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all() and len(latent) == 4


def test_normalize_applies_to_every_domain_and_the_memory_mapped_path(tmp_path):
    root = _five_band_folder(tmp_path / "d")
    cfg = DataConfig(path=str(root), normalize="asinh")
    d = load_domains(cfg)
    for s, f in ((d.train_s, "train/x_train.npy"), (d.test_t, "test/x_test_noise.npy")):
        raw = np.moveaxis(np.load(root / f), -1, 1)
        np.testing.assert_allclose(s.x.numpy(), _reference(raw, "asinh"), rtol=1e-5, atol=1e-5)
    mapped = load_split(root / "train" / "x_train.npy", root / "train" / "y_train.npy",
                        normalize="per_band_standard", memory_budget_mb=0, image_size=12)
    memory = load_split(root / "train" / "x_train.npy", root / "train" / "y_train.npy",
                        normalize="per_band_standard", image_size=12)
    assert isinstance(mapped.x, MappedImages)
    idx = torch.tensor([5, 0, 3])
    assert torch.allclose(mapped.x[idx], memory.x[idx], atol=1e-6)


def test_channel_axis_rule_and_override(tmp_path):
    cube = np.random.default_rng(0).random((6, 8, 8, 8)).astype(np.float32)  # C == H == W
    np.save(tmp_path / "x.npy", cube)
    np.save(tmp_path / "y.npy", np.arange(6) % 2)
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    nhwc = load_split(x, y, normalize="none")  # both readings square: NHWC, as documented
    assert torch.equal(nhwc.x, torch.from_numpy(np.moveaxis(cube, -1, 1)))
    nchw = load_split(x, y, normalize="none", channels_first=True)
    assert torch.equal(nchw.x, torch.from_numpy(cube))
    np.save(x, np.zeros((6, 9, 8, 9), dtype=np.float32))  # neither reading square, same length
    with pytest.raises(DataError, match="cannot tell the channel axis.*data.channels_first"):
        load_split(x, y)
    assert load_split(x, y, channels_first=False, image_size=8).shape == (9, 8, 8)
    np.save(x, np.zeros((6, 12, 10, 6), dtype=np.float32))  # non-square, 6 bands last
    assert load_split(x, y, image_size=8).shape == (6, 8, 8)
