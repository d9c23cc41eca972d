"""The newcomer's path: `sidda data import` of PNG or FITS folders, then loading and training
without naming the target suffix."""

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sidda import DataConfig, DataError, build_model, load_domains
from sidda.cli import main
from sidda.datasets import import_image_folders, layout_paths, write_layout
from sidda.errors import InputError

fits = pytest.importorskip("astropy.io.fits")


def _png_folders(root, *, n=4, size=12):
    """Grey PNGs; class k has a bright square in quadrant k."""
    rng = np.random.default_rng(0)
    for dom in ("source", "target"):
        for k, name in enumerate(("a", "b")):
            d = root / dom / name
            d.mkdir(parents=True)
            for i in range(n):
                a = (rng.random((size, size)) * 40).astype(np.uint8)
                a[k * size // 2:(k + 1) * size // 2, : size // 2] += 200
                Image.fromarray(a).save(d / f"{name}{i}.png")
    return root / "source", root / "target"


# ------------------------------------------------------------------------- recorded suffix


def test_imported_folder_loads_without_naming_the_target_suffix(tmp_path):
    src, tgt = _png_folders(tmp_path / "img")
    out = import_image_folders(src, tgt, tmp_path / "d")
    assert json.loads((out / "manifest.json").read_text())["target_suffix"] == "_target"
    cfg = DataConfig(path=str(out))
    assert cfg.target_suffix is None
    d = load_domains(cfg)
    assert d.train_t.name.endswith("x_train_target.npy") and d.test_t.name.endswith(
        "x_test_target.npy")
    assert d.num_classes == 2 and d.in_channels == 1 and d.image_size == 12
    assert layout_paths(out)["train_t"][0].name == "x_train_target.npy"
    with pytest.raises(DataError, match=r"x_train_noise.npy: file not found.*\['', '_target'\]"):
        load_domains(DataConfig(path=str(out), target_suffix="_noise"))


def test_folders_without_a_manifest_keep_the_noise_default(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{k}_{s}_{d}": (rng.random((6, 8, 8)) if k == "x" else np.arange(6) % 2)
              for k in ("x", "y") for s in ("train", "test") for d in ("s", "t")}
    root = write_layout(tmp_path / "z", arrays)
    (root / "manifest.json").unlink()  # as the paper's Zenodo folders
    assert load_domains(DataConfig(path=str(root))).train_t.name.endswith("x_train_noise.npy")
    for p in (root / "train").glob("*_noise.npy"):
        p.rename(p.with_name(p.name.replace("_noise", "_psf")))
    with pytest.raises(DataError, match=r"suffixes \['', '_psf'\].*not set, so '_noise' was used"):
        load_domains(DataConfig(path=str(root)))


def test_cli_import_then_train_without_the_suffix(tmp_path, capsys):
    src, tgt = _png_folders(tmp_path / "img", n=8, size=16)
    out = tmp_path / "conv"
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(out), "-q"]) == 0
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "r", "out_dir": str(tmp_path / "runs"), "data": {"path": "elsewhere"},
        "model": {"name": "cnn"},
        "train": {"epochs": 1, "warmup": 0, "batch_size": 8, "milestones": [], "device": "cpu"},
    }))
    assert main(["train", "--config", str(config), "-q", "--set", f"data.path={out}"]) == 0
    env = json.loads((tmp_path / "runs" / "r" / "environment.json").read_text())
    assert "train/x_train_target.npy" in env["data_files"]  # trained on the recorded target


# ----------------------------------------------------------------------------------- FITS


def _fits_folders(root, *, bands=5, n=3, size=(12, 10), gz=False, nan=True):
    """FITS cutouts: (H, W) images for bands=None, else (bands, H, W) cubes; the source in the
    primary HDU, the target in an image extension; class k is bright in band k."""
    rng = np.random.default_rng(1)
    ext = ".fits.gz" if gz else ".fits"
    for dom in ("source", "target"):
        for k, name in enumerate(("elliptical", "spiral")):
            d = root / dom / name
            d.mkdir(parents=True)
            for i in range(n):
                shape = size[::-1] if bands is None else (bands, *size[::-1])
                data = rng.normal(0, 1e-3, shape).astype(np.float64)  # float, far below 1/255
                if bands is None:
                    data[: size[1] // 2] += 0.01 * (k + 1)
                else:
                    data[k] += 0.01
                if nan and i == 0:
                    data[..., 0, 0] = np.nan
                if dom == "source":
                    fits.PrimaryHDU(data).writeto(d / f"{name}{i}{ext}")
                else:
                    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data)]).writeto(
                        d / f"{name}{i}{ext}")
    return root / "source", root / "target"


def test_fits_cubes_import_as_float_bands(tmp_path, caplog):
    src, tgt = _fits_folders(tmp_path / "f", bands=5)
    with caplog.at_level(logging.WARNING):
        out = import_image_folders(src, tgt, tmp_path / "d", random_state=0)
    man = json.loads((out / "manifest.json").read_text())
    assert man["channels"] == 5 and man["format"] == "fits" and man["image_size"] == 10
    assert man["nan_pixels_replaced"] == 2 * 2 * 5  # one file per class and domain, 5 bands
    assert "20 NaN pixel(s) in 4 FITS file(s) set to 0" in caplog.text
    x = np.load(out / "train" / "x_train.npy")
    assert x.shape == (4, 10, 10, 5) and x.dtype == np.float32
    assert np.isfinite(x).all() and np.abs(x).max() < 0.05  # kept as float, not scaled to 8 bits
    y = np.load(out / "train" / "y_train.npy")
    assert np.all(x.mean((1, 2))[:, :2].argmax(1) == y)  # class k bright in band k
    # the central 10x10 crop of the stored cube, band by band, in the file index.csv names
    rows = [r.split(",") for r in (out / "index.csv").read_text().splitlines()[1:]]
    first = next(r for r in rows if r[:3] == ["source", "train", "0"])
    cube = fits.getdata(src / first[4]).astype(np.float32)
    cube[np.isnan(cube)] = 0
    np.testing.assert_array_equal(x[0], np.moveaxis(cube[:, :, 1:11], 0, -1))
    d = load_domains(DataConfig(path=str(out), normalize="per_band_standard"))
    assert d.in_channels == 5 and d.train_t.shape == (5, 10, 10)
    model = build_model("cnn", in_channels=5, num_classes=2, image_size=10)
    with torch.no_grad():
        assert model(d.train_t.x[:2])[1].shape == (2, 2)


def test_fits_2d_compressed_and_resized_per_band(tmp_path):
    src, tgt = _fits_folders(tmp_path / "f", bands=None, gz=True, nan=False)
    out = import_image_folders(src, tgt, tmp_path / "d", image_size=16, fit="stretch")
    x = np.load(out / "train" / "x_train_target.npy")
    assert x.shape == (4, 16, 16, 1) and json.loads((out / "manifest.json").read_text())[
        "nan_pixels_replaced"] == 0
    src3, tgt3 = _fits_folders(tmp_path / "g", bands=3, nan=False)
    per_band = import_image_folders(src3, tgt3, tmp_path / "e", image_size=8)
    cube = np.load(per_band / "test" / "x_test.npy")  # (N, 8, 8, 3)
    assert cube.shape[1:] == (8, 8, 3)
    assert not np.allclose(cube[..., 0], cube[..., 1])  # each band resized on its own


def _no_image(src, tgt):
    p = next(src.glob("spiral/*.fits"))
    p.unlink()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.ones(3))])]).writeto(p)


def _other_bands(src, tgt):
    p = next(tgt.glob("spiral/*.fits"))
    p.unlink()
    fits.PrimaryHDU(np.zeros((4, 10, 12))).writeto(p)


@pytest.mark.parametrize("damage, error, match", [
    (_no_image, DataError, r"spiral\d.fits: no image data in the primary HDU or any image ext"),
    (_other_bands, DataError, r"differ in band count: .* has 5, .* has 4"),
    (lambda s, t: next(s.glob("elliptical/*.fits")).write_bytes(b"not a FITS file" * 200),
     DataError, r"elliptical\d.fits: astropy cannot read this FITS file"),
    (lambda s, t: Image.new("L", (10, 10)).save(s / "spiral" / "x.png"), DataError,
     "FITS files and other images in one import"),
    (lambda s, t: fits.PrimaryHDU(np.zeros((2, 5, 10, 12))).writeto(s / "spiral" / "z.fits"),
     DataError, r"z.fits: image data of shape \(2, 5, 10, 12\)"),
])
def test_fits_errors_name_the_file(tmp_path, damage, error, match):
    src, tgt = _fits_folders(tmp_path / "f", bands=5)
    damage(src, tgt)
    with pytest.raises(error, match=match):
        import_image_folders(src, tgt, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_fits_channels_option_and_infinite_pixels(tmp_path):
    src, tgt = _fits_folders(tmp_path / "f", bands=5, nan=False)
    with pytest.raises(InputError, match="channels=3 applies to PNG/JPEG.*5 band"):
        import_image_folders(src, tgt, tmp_path / "d", channels=3)
    p = next(src.glob("spiral/*.fits"))
    data = fits.getdata(p)
    data[0, 0, 0] = np.inf
    fits.PrimaryHDU(data).writeto(p, overwrite=True)
    with pytest.raises(DataError, match=r"spiral\d.fits: image has infinite pixels"):
        import_image_folders(src, tgt, tmp_path / "d")
