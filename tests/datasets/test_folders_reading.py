"""How `data import-folder` and `predict` read image files and class folders: value scaling of
every bit depth, band counts a PNG cannot give, nested class folders, Unicode class names,
upsampling and the split seed."""

import json
import logging
import unicodedata

import numpy as np
import pytest
from PIL import Image

from sidda.cli import main
from sidda.datasets import import_image_folders, list_image_files, read_image_file
from sidda.datasets.npyfiles import DataError
from sidda.errors import InputError


def _folders(root, *, classes=("a", "b"), n=3, size=12, domains=("s", "t"), save=None):
    """Grey 8-bit PNGs, class k brighter; ``save(path, k, i)`` writes a file instead."""
    rng = np.random.default_rng(0)
    for dom in domains:
        for k, name in enumerate(classes):
            d = root / dom / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if save is not None:
                    save(d / f"{i}", k, i)
                else:
                    a = (rng.random((size, size)) * 50 + 100 * k).astype(np.uint8)
                    Image.fromarray(a).save(d / f"{i}.png")
    return [root / d for d in domains]


def _all_pixels(out):
    return np.concatenate([np.load(out / f).ravel() for f in
                           ("train/x_train.npy", "test/x_test.npy")])


# ------------------------------------------------------------------------ 32-bit integers


def _int32(values):
    def save(path, k, i):
        Image.fromarray(values(k, i).astype(np.int32), "I").save(path.with_suffix(".tif"))
    return save


def test_32_bit_integers_within_16_bits_scale_like_16_bit(tmp_path):
    ramp = np.arange(144).reshape(12, 12) * 400  # 0 .. 57200
    src, tgt = _folders(tmp_path, save=_int32(lambda k, i: ramp + 100 * k))
    out = import_image_folders(src, tgt, tmp_path / "d", channels=1)
    path = next(src.glob("b/*.tif"))
    with Image.open(path) as im:
        assert im.mode == "I"  # the reader sees a 32-bit integer image
    x = read_image_file(path, channels=1, size=12)
    np.testing.assert_allclose(x[..., 0], (ramp + 100) / 65535, rtol=1e-6)
    v = _all_pixels(out)
    assert v.max() < 1 and np.mean(v == 1.0) == 0  # nothing clipped


@pytest.mark.parametrize("lo, hi", [(0, 10**6), (-5, 100)])
def test_32_bit_integers_beyond_16_bits_are_refused_by_import_and_predict(tmp_path, lo, hi):
    values = np.linspace(lo, hi, 144).reshape(12, 12)
    src, tgt = _folders(tmp_path, save=_int32(lambda k, i: values))
    with pytest.raises(DataError, match=rf"32-bit integer pixels from {lo} to {hi}, outside the "
                                        r"0..65535 .* 32-bit float TIFF"):
        import_image_folders(src, tgt, tmp_path / "d")
    assert not (tmp_path / "d").exists()
    with pytest.raises(DataError, match="32-bit integer pixels"):
        read_image_file(next(src.glob("a/*.tif")), channels=1, size=12)


def test_float_tiffs_keep_their_values(tmp_path):
    def save(path, k, i):
        Image.fromarray(np.full((12, 12), 1e4 * (k + 1), dtype=np.float32), "F").save(
            path.with_suffix(".tif"))
    src, tgt = _folders(tmp_path, save=save)
    out = import_image_folders(src, tgt, tmp_path / "d")
    assert set(np.unique(_all_pixels(out)).tolist()) == {1e4, 2e4}


# ------------------------------------------------------------------------ band counts


@pytest.mark.parametrize("channels", [2, 4, 5])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_png_given_to_a_model_of_other_band_counts_is_refused(tmp_path, channels, mode):
    path = tmp_path / "x.png"
    Image.new(mode, (10, 10)).save(path)
    with pytest.raises(DataError, match=rf"x.png: PNG/JPEG give 1 or 3 channels; the model "
                                        rf"takes {channels} bands"):
        read_image_file(path, channels=channels, size=8)


def test_rgba_and_grey_give_the_channels_asked_for(tmp_path):
    Image.new("RGBA", (10, 10), (255, 0, 0, 10)).save(tmp_path / "c.png")
    Image.new("L", (10, 10), 51).save(tmp_path / "g.png")
    rgb = read_image_file(tmp_path / "c.png", channels=3, size=10)
    assert rgb.shape == (10, 10, 3) and rgb[0, 0].tolist() == [1.0, 0.0, 0.0]
    grey = read_image_file(tmp_path / "g.png", channels=3, size=10)
    np.testing.assert_allclose(grey[0, 0], [0.2, 0.2, 0.2], rtol=1e-6)


# ------------------------------------------------------------------------ nested class folders


def test_class_folders_are_read_recursively_as_predict_lists_them(tmp_path):
    src, tgt = _folders(tmp_path, n=3)
    nested = src / "a" / "more" / "deeper"
    nested.mkdir(parents=True)
    for i in range(4):
        Image.new("L", (12, 12), 255).save(nested / f"n{i}.png")
    (src / "a" / ".hidden").mkdir()
    Image.new("L", (12, 12), 7).save(src / "a" / ".hidden" / "skip.png")
    (src / "a" / "notes.txt").write_text("not an image")
    out = import_image_folders(src, tgt, tmp_path / "d")
    rows = [r.split(",") for r in (out / "index.csv").read_text().splitlines()[1:]]
    files = sorted(r[4] for r in rows if r[0] == "source")
    assert files == sorted(p.relative_to(src).as_posix() for p in list_image_files(src))
    assert "a/more/deeper/n0.png" in files and not any(".hidden" in f for f in files)
    assert len(files) == 3 + 4 + 3  # class a: 3 + 4 nested; class b: 3
    labels = {r[4]: r[3] for r in rows if r[0] == "source"}
    assert labels["a/more/deeper/n3.png"] == "0"
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts_per_class"]["y_train_s"][0] + man["counts_per_class"]["y_test_s"][0] == 7


def test_list_image_files_is_sorted_skips_hidden_and_survives_link_loops(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    for rel in ("z.png", "b/c/a.FITS", "b/a.JPG", ".x.png", "b/c/t.txt"):
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "b" / "loop").symlink_to(tmp_path, target_is_directory=True)
    got = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert got == ["b/a.JPG", "b/c/a.FITS", "z.png"]


# ------------------------------------------------------------------------ Unicode names


def test_class_names_are_nfc_and_match_across_forms(tmp_path):
    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    assert nfc != nfd
    src, = _folders(tmp_path, classes=(nfc, "tea"), domains=("s",))
    tgt, = _folders(tmp_path, classes=(nfd, "tea"), domains=("t",))
    out = import_image_folders(src, tgt, tmp_path / "d")
    assert json.loads((out / "manifest.json").read_text())["class_names"] == [nfc, "tea"]


def test_one_class_in_two_unicode_forms_is_refused(tmp_path):
    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    src, tgt = _folders(tmp_path, classes=(nfc, nfd, "tea"))
    with pytest.raises(DataError, match="same name in two Unicode forms"):
        import_image_folders(src, tgt, tmp_path / "d")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------ sizes and seed


def test_upsampling_small_images_is_warned(tmp_path, caplog):
    src, tgt = _folders(tmp_path, size=4)
    with caplog.at_level(logging.WARNING):
        out = import_image_folders(src, tgt, tmp_path / "d", image_size=16)
    assert "12 image(s) smaller than 16x16 are upsampled" in caplog.text
    assert np.load(out / "train" / "x_train.npy").shape[1:] == (16, 16, 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        import_image_folders(src, tgt, tmp_path / "e", image_size=8)
    assert "upsampled" in caplog.text
    big_src, big_tgt = _folders(tmp_path / "big", size=20)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        import_image_folders(big_src, big_tgt, tmp_path / "f", image_size=16)
    assert "upsampled" not in caplog.text


def test_negative_seed_is_refused(tmp_path, capsys):
    src, tgt = _folders(tmp_path)
    with pytest.raises(InputError, match="--seed must be an integer >= 0, got -1"):
        import_image_folders(src, tgt, tmp_path / "d", random_state=-1)
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(tmp_path / "e"),
                 "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sidda: error: --seed must be an integer >= 0, got -1"]
    assert not (tmp_path / "e").exists()
