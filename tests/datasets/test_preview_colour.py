"""`data show`: bands to colour and the stretches (`to_rgb`), labels drawn literally, bounded
grids, and its options' errors."""

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from sidda import DataConfig, load_domains
from sidda.cli import main
from sidda.datasets import to_rgb, write_layout
from sidda.errors import InputError
from sidda.plots import sample_grid

fits = pytest.importorskip("astropy.io.fits")


def _u8(u):
    return np.round(np.clip(u, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------- to_rgb


def test_linear_is_a_clip_between_the_percentiles_of_all_images():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 6))
    lo, hi = np.percentile(x, [0.5, 99.5])
    expected = _u8((np.moveaxis(x, 1, -1) - lo) / (hi - lo))
    np.testing.assert_array_equal(to_rgb(x), expected)
    per_image = to_rgb(x, per_image=True)
    lo1, hi1 = np.percentile(x[1], [0.5, 99.5])
    np.testing.assert_array_equal(per_image[1], _u8((np.moveaxis(x[1], 0, -1) - lo1) /
                                                    (hi1 - lo1)))


def test_band_order_gives_astronomical_colour():
    g, r, z = 1.0, 2.0, 3.0  # stored blue to red, as bands 0, 1, 2
    x = np.stack([np.full((4, 4), v) for v in (g, r, z)])[None]  # (1, 3, 4, 4)
    px = to_rgb(x, rgb=(2, 1, 0), minimum=0, stretch_range=3)[0, 0, 0]
    assert px.tolist() == [255, 170, 85]  # z -> R, r -> G, g -> B
    assert to_rgb(x, minimum=0, stretch_range=3)[0, 0, 0].tolist() == [85, 170, 255]
    assert to_rgb(x, rgb=(1,), minimum=0, stretch_range=3)[0, 0, 0].tolist() == [170] * 3


def test_default_colours_for_each_band_count():
    def px(c):
        x = np.arange(1, c + 1, dtype=float)[None, :, None, None] * np.ones((1, c, 2, 2))
        return to_rgb(x, minimum=0, stretch_range=c)[0, 0, 0].tolist()

    assert px(1) == [255, 255, 255]  # grey
    assert px(2) == [255, 191, 128]  # R = band 1, G = the mean, B = band 0
    assert px(5) == [51, 102, 153]  # the first three bands as R, G, B


def test_asinh_follows_its_formula():
    x = np.linspace(0, 10, 16).reshape(1, 1, 4, 4)
    got = to_rgb(x, stretch="asinh", q=5, minimum=0, stretch_range=10)[0, :, :, 0]
    expected = _u8(np.arcsinh(5 * x[0, 0] / 10) / math.asinh(5))
    np.testing.assert_array_equal(got, expected)
    default = to_rgb(x, stretch="asinh")[0, :, :, 0]
    assert default.max() == 255 and default[-1, -1] == 255  # hi is the maximum: nothing clips


def test_lupton_matches_the_closed_form_and_keeps_colours():
    q, m, s = 8.0, 0.5, 40.0
    rgb = np.array([[[3.0, 30.0, 300.0]], [[2.0, 20.0, 200.0]], [[1.0, 10.0, 100.0]]])  # (3,1,3)
    got = to_rgb(rgb[None], stretch="lupton", q=q, minimum=m, stretch_range=s)[0, 0]
    for j in range(3):
        v = rgb[:, 0, j] - m
        i = v.mean()
        fac = math.asinh(q * i / s) * 0.1 * 255 / math.asinh(0.1 * q) / i
        out = v * fac
        if out.max() > 255:  # a saturated pixel is scaled down whole: its colour is kept
            out = out * 255 / out.max()
        assert got[j].tolist() == np.floor(out).astype(int).tolist(), j
    assert got[0, 0] > got[0, 1] > got[0, 2]


def test_lupton_defaults_make_the_brightest_pixels_white_and_the_sky_black():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (4, 1, 32, 32))
    x[:, :, 12:20, 12:20] += 200  # bright sources on a noisy sky
    out = to_rgb(x, stretch="lupton")[..., 0]
    sky, source = out[:, :8, :8], out[:, 12:20, 12:20]
    assert 0.4 < np.mean(sky == 0) < 0.6  # the median is the black level: half the sky is 0
    assert np.median(sky) < 60 and np.median(source) >= 250


@pytest.mark.parametrize("kw, match", [
    ({"stretch": "log"}, "--stretch must be one of linear, asinh, lupton, got 'log'"),
    ({"rgb": (0, 1, 5)}, r"rgb names band 5, but the images have 3 band\(s\) \(0..2\)"),
    ({"rgb": (0, 1)}, r"--rgb takes 3 bands \(for R, G, B\) or 1"),
    ({"q": 0}, "--stretch-q must be a number > 0"),
    ({"stretch_range": -1.0}, "--stretch-range must be a number > 0"),
    ({"minimum": float("inf")}, "--stretch-minimum must be a finite number"),
])
def test_bad_colour_options_are_input_errors(kw, match):
    with pytest.raises(InputError, match=match):
        to_rgb(np.zeros((1, 3, 4, 4)), **kw)


# ------------------------------------------------------------------------------- the grid


def _data(root, names=("a", "b", "c"), n=12):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "test"):
        for dom in ("s", "t"):
            arrays[f"x_{split}_{dom}"] = rng.random((n, 8, 8, 1)).astype(np.float32)
            arrays[f"y_{split}_{dom}"] = np.arange(n) % len(names)
    return write_layout(root, arrays, manifest={"class_names": list(names)})


def test_the_grid_is_bounded_by_the_class_size_and_a_maximum(tmp_path):
    data = load_domains(DataConfig(path=str(_data(tmp_path / "d"))))  # 4 per class
    assert len(sample_grid(data, per_class=40).axes) == 3 * 4 * 2
    with pytest.raises(InputError, match=r"--per-class must lie in 1..64, got 65"):
        sample_grid(data, per_class=65)


def test_mathtext_class_names_are_drawn_literally(tmp_path, capsys):
    from sidda.plots import confusion_matrices

    names = ["$\\frac{a}{$", "price_$5-$10", "plain"]
    root = _data(tmp_path / "d", names=names)
    assert main(["data", "show", str(root), "--out", str(tmp_path / "g.png")]) == 0
    fig = sample_grid(load_domains(DataConfig(path=str(root))), per_class=2, class_names=names)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["\\$\\frac{a}{\\$", "price_\\$5-\\$10", "plain"]
    fig.savefig(io.BytesIO(), format="png")
    cm = confusion_matrices({"target $x$": np.eye(3)}, class_names=names)
    cm.savefig(io.BytesIO(), format="png")  # a parse error would raise here
    ax = cm.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    assert ax.get_title() == "target \\$x\\$"


def test_characters_the_font_lacks_are_named_in_one_line(tmp_path, capsys, monkeypatch):
    """CJK and emoji class names: one warning naming the characters, not matplotlib's
    warning per glyph with its source line (checked against matplotlib itself first)."""
    import warnings

    from matplotlib.figure import Figure

    import sidda._text

    names = ["\u732b", "\U0001f41f", "plain"]
    fig = Figure()
    fig.text(0, 0, "".join(names))
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    lacking = [n for n in names[:2] if any(f"Glyph {ord(n)} " in str(w.message) for w in raw)]
    if not lacking:
        pytest.skip("the font of this machine draws these characters")
    monkeypatch.setattr(sidda._text, "_REPORTED", set())
    root = _data(tmp_path / "d", names=names)
    capsys.readouterr()
    assert main(["data", "show", str(root), "--out", str(tmp_path / "g.png")]) == 0
    err = capsys.readouterr().err
    assert "UserWarning" not in err and "savefig" not in err
    said = [ln for ln in err.splitlines() if "has no glyph for" in ln]
    assert len(said) == 1 and all(c in said[0] for c in lacking), err
    assert (tmp_path / "g.png").is_file()


# ------------------------------------------------------------------------------- the command


def test_out_without_a_suffix_writes_and_prints_the_png(tmp_path, capsys):
    root = _data(tmp_path / "d")
    assert main(["data", "show", str(root), "--out", str(tmp_path / "grid")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'grid.png'}"
    with Image.open(tmp_path / "grid.png") as im:
        assert im.format == "PNG"
    assert main(["data", "show", str(root), "--out", str(tmp_path / "grid.png")]) == 0
    assert "(replaced the file that was there)" in capsys.readouterr().out


@pytest.mark.parametrize("args, says", [
    (["--out", "{t}/grid.xyz"], "cannot draw a .xyz file; give --out a name ending in one of "),
    (["--out", "{d}/train/x_train.npy"], "cannot draw a .npy file"),
    (["--per-class", "100000"], "--per-class must lie in 1..64, got 100000"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--stretch", "log"], "--stretch must be one of linear, asinh, lupton, got 'log'"),
    (["--stretch-q", "0"], "--stretch-q must be a number > 0, got 0.0"),
    (["--stretch-range", "nan"], "--stretch-range must be a number > 0"),
    (["--rgb", "0,1"], "--rgb takes 3 bands (for R, G, B) or 1 (grey)"),
    (["--rgb", "a,b,c"], "--rgb takes comma-separated integers"),
    (["--rgb", "2,1,0"], "--rgb names band 2, but the images have 1 band(s) (0..0)"),
])
def test_bad_show_options_exit_2_with_one_line(tmp_path, capsys, args, says):
    root = _data(tmp_path / "d")
    before = (root / "train" / "x_train.npy").read_bytes()
    args = [a.format(t=tmp_path, d=root) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "g.png")]
    assert main(["data", "show", str(root), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert (root / "train" / "x_train.npy").read_bytes() == before
    assert not (tmp_path / "g.png").exists()


def test_fits_imports_are_drawn_reddest_band_as_red(tmp_path):
    for dom in ("s", "t"):
        for c in ("a", "b"):
            (tmp_path / dom / c).mkdir(parents=True)
            for i in range(2):
                cube = np.zeros((3, 16, 16), dtype=np.float32)
                cube[2] = 100 + i  # only the reddest band (z) is bright
                fits.PrimaryHDU(cube).writeto(tmp_path / dom / c / f"{i}.fits")
    assert main(["data", "import-folder", str(tmp_path / "s"), str(tmp_path / "t"), "--out",
                 str(tmp_path / "d"), "-q"]) == 0
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["format"] == "fits"

    def colours(extra):
        out = tmp_path / "g.png"
        assert main(["data", "show", str(tmp_path / "d"), "--out", str(out), *extra]) == 0
        with Image.open(out) as im:
            px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
        return ((px[:, 0] > 200) & (px[:, 2] < 60)).sum(), ((px[:, 2] > 200) & (px[:, 0] < 60)
                                                             ).sum()

    red, blue = colours([])
    assert red > 1000 and blue == 0
    red, blue = colours(["--rgb", "0,1,2"])
    assert blue > 1000 and red == 0
