"""FITS cutouts with one image HDU per band (`--bands`, `--hdu`), the reader option predict uses,
and the messages for damaged files and cubes stored bands last."""

import json
import logging

import numpy as np
import pytest

from sidda.cli import main
from sidda.datasets import (
    import_image_folders,
    import_settings,
    load_domains,
    read_image_file,
    resolve_data_config,
)
from sidda.datasets.fits import check_hdus, fits_bands, read_fits
from sidda.datasets.npyfiles import DataError
from sidda.errors import InputError

fits = pytest.importorskip("astropy.io.fits")

BANDS = ("g", "r", "z")


def _cutout(path, k, i, *, names=BANDS, shape=(12, 12), primary_data=False):
    """One object as a survey cutout service writes it: an empty primary HDU and one image
    extension per band; band b of class k holds (b + 1) * 10 + k, plus a pixel ramp."""
    ramp = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 1000
    hdus = [fits.PrimaryHDU(ramp if primary_data else None)]
    hdus += [fits.ImageHDU(ramp + (b + 1) * 10 + k + i / 100, name=n)
             for b, n in enumerate(names)]
    fits.HDUList(hdus).writeto(path)


def _folders(root, n=3, **kw):
    for dom in ("s", "t"):
        for k, c in enumerate(("elliptical", "spiral")):
            d = root / dom / c
            d.mkdir(parents=True)
            for i in range(n):
                _cutout(d / f"{i}.fits", k, i, **kw)
    return root / "s", root / "t"


def test_bands_by_extname_are_stacked_in_the_order_given(tmp_path):
    src, tgt = _folders(tmp_path)
    out = import_image_folders(src, tgt, tmp_path / "d", hdus=["z", "G", "r"])
    man = json.loads((out / "manifest.json").read_text())
    assert man["fits_hdus"] == ["Z", "G", "R"] and man["channels"] == 3
    x, y = np.load(out / "train" / "x_train.npy"), np.load(out / "train" / "y_train.npy")
    assert x.shape[1:] == (12, 12, 3)
    # band 0 is z (30 + k), band 1 g (10 + k), band 2 r (20 + k); corner pixel has ramp 0
    np.testing.assert_allclose(np.floor(x[:, 0, 0, :]), np.stack([30 + y, 10 + y, 20 + y], 1))


def test_bands_by_index_equal_bands_by_name(tmp_path):
    src, tgt = _folders(tmp_path)
    by_name = import_image_folders(src, tgt, tmp_path / "a", hdus=["G", "R", "Z"])
    by_index = import_image_folders(src, tgt, tmp_path / "b", hdus=[1, 2, 3])
    for f in ("train/x_train.npy", "test/x_test_target.npy"):
        np.testing.assert_array_equal(np.load(by_name / f), np.load(by_index / f))
    assert json.loads((by_index / "manifest.json").read_text())["fits_hdus"] == [1, 2, 3]


def test_without_bands_the_first_image_is_read_and_the_rest_warned(tmp_path, caplog):
    src, tgt = _folders(tmp_path)
    with caplog.at_level(logging.WARNING):
        out = import_image_folders(src, tgt, tmp_path / "d")
    assert "12 FITS file(s) hold more image HDUs than the one read" in caplog.text
    assert "2 R, 3 Z left out" in caplog.text and "--bands" in caplog.text
    x = np.load(out / "train" / "x_train.npy")
    assert x.shape[-1] == 1 and 10 <= x.min() and x.max() < 12  # the g band only
    assert json.loads((out / "manifest.json").read_text())["fits_hdus"] is None


def test_a_missing_hdu_lists_what_the_file_has(tmp_path, capsys):
    src, tgt = _folders(tmp_path)
    with pytest.raises(DataError, match=r"\.fits: no HDU I; the file has 0 PRIMARY \(no data\), "
                                        r"1 G \(image 12x12\), 2 R \(image 12x12\), 3 Z"):
        import_image_folders(src, tgt, tmp_path / "d", hdus=["g", "i"])
    with pytest.raises(DataError, match=r"no HDU index 7; the file has 0 PRIMARY"):
        import_image_folders(src, tgt, tmp_path / "d", hdus=[1, 7])
    with pytest.raises(DataError, match=r"HDU 0 holds data of shape \(\); each band named must"):
        import_image_folders(src, tgt, tmp_path / "d", hdus=[0, 1])
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(tmp_path / "d"),
                 "--bands", "G,Y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no HDU Y; the file has" in err[0]
    assert not (tmp_path / "d").exists()


def test_bands_of_different_shapes_are_refused(tmp_path):
    src, tgt = _folders(tmp_path)
    odd = next(src.glob("spiral/*.fits"))
    with fits.open(odd) as hdul:
        hdus = [h.copy() for h in hdul]
    hdus[2] = fits.ImageHDU(np.zeros((10, 12), dtype=np.float32), name="R")
    odd.unlink()
    fits.HDUList(hdus).writeto(odd)
    with pytest.raises(DataError, match=r"the bands differ in shape \(HDU G 12x12, HDU R 12x10, "
                                        r"HDU Z 12x12\)"):
        import_image_folders(src, tgt, tmp_path / "d", hdus=["g", "r", "z"])


def test_bad_selections_and_png_with_bands_are_input_errors(tmp_path):
    for bad, match in ((["g", "g"], "twice"), (["g", 1], "mix names and indices"),
                       ([-1], "neither an HDU name"), ([], "list of HDU names"),
                       ("gr", "list of HDU names"), ([" "], "neither")):
        with pytest.raises(InputError, match=match):
            check_hdus(bad)
    from PIL import Image

    for dom in ("s", "t"):
        for c in ("a", "b"):
            (tmp_path / dom / c).mkdir(parents=True)
            for i in range(2):
                Image.new("L", (8, 8)).save(tmp_path / dom / c / f"{i}.png")
    with pytest.raises(InputError, match="--bands/--hdu select HDUs of FITS files"):
        import_image_folders(tmp_path / "s", tmp_path / "t", tmp_path / "d", hdus=["g"])


def test_predict_reads_a_file_as_the_import_recorded(tmp_path):
    src, tgt = _folders(tmp_path)
    out = import_image_folders(src, tgt, tmp_path / "d", hdus=["z", "r", "g"], image_size=8)
    settings = import_settings(json.loads((out / "manifest.json").read_text()))
    assert settings.hdus == ("Z", "R", "G") and settings.image_size == 8
    rows = [r.split(",") for r in (out / "index.csv").read_text().splitlines()[1:]]
    row = next(r for r in rows if r[:3] == ["target", "test", "0"])
    x = read_image_file(tgt / row[4], channels=3, size=settings.image_size, fit=settings.fit,
                        hdus=settings.hdus)
    np.testing.assert_array_equal(x, np.load(out / "test" / "x_test_target.npy")[0])
    with pytest.raises(DataError, match=r"1 band\(s\), but the model takes 3"):  # the default
        read_image_file(tgt / row[4], channels=3, size=8)


def test_import_settings_of_other_folders_and_damaged_manifests():
    assert import_settings({}) == (None, "crop", None)
    with pytest.raises(DataError, match="manifest.json of an import: .*re-import"):
        import_settings({"generator": "image-folder", "fits_hdus": "G,R"})
    with pytest.raises(DataError, match="fit 'tile'"):
        import_settings({"generator": "image-folder", "fit": "tile"})


def test_bands_last_cube_gets_a_layout_hint(tmp_path):
    path = tmp_path / "hwc.fits"
    fits.PrimaryHDU(np.zeros((16, 16, 3), dtype=np.float32)).writeto(path)
    with pytest.raises(DataError, match=r"shape \(16, 16, 3\) looks stored as \(H, W, C\), bands "
                                        r"last; .* \(C, H, W\)"):
        fits_bands(path)
    with pytest.raises(DataError, match="bands last"):
        read_fits(path)
    fits.PrimaryHDU(np.zeros((3, 16, 16), dtype=np.float32)).writeto(tmp_path / "chw.fits")
    assert fits_bands(tmp_path / "chw.fits").bands == 3


def test_a_damaged_fits_file_gives_one_line_and_no_astropy_noise(tmp_path, capfd):
    src, tgt = _folders(tmp_path, n=2)
    bad = next(src.glob("spiral/*.fits"))
    bad.write_bytes(bad.read_bytes()[:4000])  # truncated inside the first extension
    code = main(["data", "import-folder", str(src), str(tgt), "--out", str(tmp_path / "d"),
                 "-q"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("sidda: error: ") and bad.name in err[0], err


def test_multi_band_fits_folder_loads_and_shows(tmp_path):
    src, tgt = _folders(tmp_path)
    out = import_image_folders(src, tgt, tmp_path / "d", hdus=["G", "R", "Z"])
    d = load_domains(resolve_data_config(out))
    assert d.in_channels == 3 and d.num_classes == 2
    assert main(["data", "show", str(out), "--out", str(tmp_path / "g.png"),
                 "--stretch", "lupton"]) == 0
