"""Fuzzing the boundaries: the config parser, the data loaders, the image and FITS readers,
the folder import, the drawing and the CLI get random malformed input and must answer with
their documented error (ConfigError, DataError, exit 2 and one ``sidda: error:`` line), never
with a traceback."""

import contextlib
import io
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from sidda import ConfigError, DataConfig, DataError, RunConfig, load_domains
from sidda._text import escape_mathtext
from sidda.cli import main
from sidda.datasets import (
    check_data,
    import_image_folders,
    list_image_files,
    normalisation_report,
    read_image_file,
    to_rgb,
)
from sidda.datasets.fits import fits_bands, read_fits
from sidda.errors import InputError

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# ------------------------------------------------------------------------------- config

SECTIONS = {s: list(RunConfig().to_dict()[s]) for s in ("data", "model", "loss", "train")}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-10, 200),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["cnn", "d4", "c0", "sidda", "source_only", "zenodo", "cpu", "auto", ".",
                     "..", "a/b", "", "1e-2", "[1, 2]"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=6), st.integers()),
                                            inner, max_size=4)),
    max_leaves=8,
)


@st.composite
def near_valid_configs(draw):
    """A valid config with a few fields replaced by random values (or random keys added)."""
    d = RunConfig(name="fuzz", out_dir="runs").to_dict()
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["top", *SECTIONS]))
        node = d if section == "top" else d[section]
        if not isinstance(node, dict):
            continue
        known = ["name", "out_dir", *SECTIONS] if section == "top" else SECTIONS[section]
        key = draw(st.one_of(st.sampled_from(known), st.text(max_size=8)))
        node[key] = draw(values)
    return d


def _parses_or_config_error(build):
    try:
        cfg = build()
    except ConfigError as e:
        assert str(e), "an empty error message"
        return None
    assert isinstance(cfg, RunConfig)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # what parses round-trips
    return cfg


@FUZZ
@given(d=st.one_of(near_valid_configs(), values))
def test_from_dict_raises_only_config_error(d):
    _parses_or_config_error(lambda: RunConfig.from_dict(d))


@FUZZ
@given(text=st.one_of(
    st.text(max_size=200),
    near_valid_configs().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.sampled_from(["train: [1, 2\n", "{a: 1, a: 2}", "? [a, b]\n: 1", "train: {lr: .nan}",
                     "train: {lr: .inf}", "a: &x [*x]", "!!python/object:os.system {}",
                     "train: {epochs: 2020-01-01}", "- 1\n- 2", "1: {2: 3}", "\t", "%YAML"]),
))
def test_from_yaml_raises_only_config_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        _parses_or_config_error(lambda: RunConfig.from_yaml(path))


@FUZZ
@given(raw=st.binary(max_size=200))
def test_from_yaml_of_random_bytes_raises_only_config_error(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(raw)
        _parses_or_config_error(lambda: RunConfig.from_yaml(path))


override_keys = st.one_of(
    st.sampled_from([f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks] + ["name", "train"]),
    st.text(max_size=12),
)
override_values = st.one_of(
    st.text(max_size=12), st.integers().map(str), st.floats().map(repr),
    st.sampled_from(["null", "True", "[1, 2]", "(1,)", "{1: 2}", "{}", "1j", "b'x'",
                     "[" * 200, "1e999", "-0", "'d4'", "0x10", "10**100"]),
)


@FUZZ
@given(items=st.lists(st.one_of(st.text(max_size=20),
                                st.tuples(override_keys, override_values).map("=".join)),
                      min_size=1, max_size=4))
def test_override_raises_only_config_error(items):
    _parses_or_config_error(lambda: RunConfig(name="fuzz").override(items))


# --------------------------------------------------------------------------- data files

FILES = ["train/x_train.npy", "train/y_train.npy", "train/x_train_noise.npy",
         "train/y_train_noise.npy", "test/x_test.npy", "test/y_test.npy",
         "test/x_test_noise.npy", "manifest.json"]
DTYPES = [np.bool_, np.int8, np.uint8, np.int64, np.uint64, np.float16, np.float32, np.float64,
          np.complex64, np.dtype("U3"), np.dtype("S2"), np.dtype("datetime64[s]"),
          np.dtype("timedelta64[s]"), np.dtype([("a", "f4"), ("b", "i2")])]

shapes = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
    st.sampled_from([(48,), (48, 16, 16), (48, 16, 16, 1), (48, 3, 16, 16), (24, 16, 16, 3),
                     (48, 16, 16, 5), (48, 8, 9), (0, 16, 16), (48, 0)]),
)
arrays = st.tuples(st.sampled_from(DTYPES), shapes).flatmap(lambda a: hnp.arrays(*a))
label_like = st.builds(
    lambda n, lo, hi, kind: (np.arange(n) % max(hi, 1) + lo).astype(kind),
    st.sampled_from([0, 1, 10, 47, 48, 49]), st.integers(-3, 2), st.integers(0, 2**40),
    st.sampled_from([np.int64, np.float64, np.float32, np.uint8]),
)
def _filled(n, side, fill, dtype):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.full((n, side, side), fill).astype(dtype, casting="unsafe")


image_like = st.builds(
    _filled,
    st.sampled_from([0, 1, 48]), st.sampled_from([1, 7, 8, 16, 20]),
    st.sampled_from([0.0, 0.5, math.nan, math.inf, -math.inf, 1e300, 255]),
    st.sampled_from([np.float16, np.float32, np.float64, np.uint8]),
)


def _npz(arr):
    buf = io.BytesIO()
    np.savez(buf, a=arr)
    return buf.getvalue()


def _pickled(arr):
    buf = io.BytesIO()
    np.save(buf, np.array([arr, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


@st.composite
def damage(draw):
    """(file, bytes to write, or None to delete it)."""
    target = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(["array", "labels", "images", "garbage", "truncate", "npz",
                                 "pickle", "delete", "zip", "json"]))
    if kind in ("array", "labels", "images"):
        arr = draw({"array": arrays, "labels": label_like, "images": image_like}[kind])
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return target, buf.getvalue()
    if kind == "garbage":
        return target, draw(st.binary(max_size=300))
    if kind == "truncate":
        return target, ("truncate", draw(st.integers(0, 2000)))
    if kind == "npz":
        return target, _npz(np.zeros((48, 16, 16)))
    if kind == "pickle":
        return target, _pickled(np.zeros(3))
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x", "y")
        return target, buf.getvalue()
    if kind == "json":
        return target, draw(st.sampled_from([b"{bad", b"[1]", b"null", b"[" * 5000 + b"]" * 5000,
                                             b"\xff\xfe", b'{"class_names": 3}']))
    return target, None


@pytest.fixture(scope="module")
def base_data(tmp_path_factory):
    from conftest import write_tiny_data

    return write_tiny_data(tmp_path_factory.mktemp("fuzz") / "data")


@contextlib.contextmanager
def _damaged_copy(base, edits):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(base, root)
        for target, content in edits:
            path = root / target
            if content is None:
                path.unlink(missing_ok=True)
            elif isinstance(content, tuple):  # truncate
                raw = path.read_bytes() if path.exists() else b""
                path.write_bytes(raw[: content[1]])
            else:
                path.write_bytes(content)
        yield root


@FUZZ
@given(edits=st.lists(damage(), min_size=1, max_size=3),
       budget=st.sampled_from([0, 2048]), size=st.sampled_from([None, 8, 12]))
def test_loaders_raise_only_data_error(base_data, edits, budget, size):
    with _damaged_copy(base_data, edits) as root:
        cfg = DataConfig(path=str(root), memory_budget_mb=budget, image_size=size)
        for load in (load_domains, check_data):
            try:
                out = load(cfg)
            except DataError as e:
                assert str(root) in str(e) or "source and target" in str(e), str(e)
                continue
            data = out if load is load_domains else load_domains(cfg)
            for s in (data.train_s, data.train_t, data.test_s, data.test_t):
                x = s.x[torch.arange(len(s))]
                assert torch.isfinite(x).all() and x.shape[1] >= 1 and min(x.shape[2:]) >= 8
                if s.y is not None:
                    assert 0 <= int(s.y.min()) and int(s.y.max()) < data.num_classes


# ---------------------------------------------------------------------------------- CLI


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    near_valid_configs().map(yaml.safe_dump),
    st.text(max_size=100),
    st.sampled_from(["train: {warmup: 9, epochs: 2}", "train: {lr: 0}", "model: {name: vgg}",
                     "name: ../escape", "data: {path: /nonexistent}", "[1, 2]"]),
))
def test_cli_train_with_a_bad_config_exits_2_with_one_line(text, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bad.yaml"
        cfg.write_text(text, encoding="utf-8")
        cwd = os.getcwd()
        os.chdir(tmp)  # a config that parses points at data/shapes, which is not here
        try:
            code = main(["train", "--config", str(cfg), "-q"])
        finally:
            os.chdir(cwd)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and err[0].startswith("sidda: error: "), err
        assert not (Path(tmp) / "runs").exists()


# ------------------------------------------------------------------- image files and folders

SMALL = settings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])

pil_images = st.one_of(
    st.tuples(st.just("I"), st.integers(-2**31, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.tuples(st.just("I;16"), st.integers(0, 65535), st.integers(0, 65535)),
    st.tuples(st.just("L"), st.integers(0, 255), st.integers(0, 255)),
    st.tuples(st.just("F"), st.floats(-1e30, 1e30), st.floats(0, 1e30)),
)


@SMALL
@given(image=pil_images, channels=st.integers(1, 6), size=st.sampled_from([8, 9]))
def test_image_files_of_any_depth_are_read_in_range_or_refused(image, channels, size):
    """Every bit depth: values scaled by the documented rule (integers never clipped to 1
    silently), or a DataError; a band count that PNG/JPEG cannot give is refused."""
    mode, lo, span = image
    hi = min(lo + span, 2**31 - 1) if mode != "F" else lo + span
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.tif"
        values = np.linspace(lo, hi, 64).reshape(8, 8)
        dtype = {"I": np.int32, "I;16": np.uint16, "L": np.uint8, "F": np.float32}[mode]
        img = Image.fromarray(values.astype(dtype), mode if mode != "I;16" else None)
        img.save(path)
        try:
            x = read_image_file(path, channels=channels, size=size)
        except DataError as e:
            assert channels not in (1, 3) or (mode == "I" and (lo < 0 or hi > 65535)), str(e)
            return
        assert channels in (1, 3) and x.shape == (size, size, channels)
        if mode != "F":
            assert 0 <= x.min() and x.max() <= 1
        if mode in ("I", "I;16") and size == 8:  # no resize: exactly v / 65535
            np.testing.assert_allclose(x[..., 0], values.astype(dtype) / 65535, rtol=1e-6)


@st.composite
def trees(draw):
    """Relative image paths inside two class folders, nested up to 3 levels, some hidden."""
    part = st.sampled_from(["a", "b", "more", ".h", "x y", "caf\u00e9", "deep"])
    files = draw(st.lists(st.tuples(st.sampled_from(["c0", "c1"]),
                                    st.lists(part, max_size=3),
                                    st.sampled_from(["i.png", "j.PNG", ".k.png", "n.txt"])),
                          min_size=1, max_size=8))
    return [("/".join([c, *mid, name])) for c, mid, name in files]


@SMALL
@given(files=trees())
def test_import_reads_what_list_image_files_lists(files):
    """Nested class folders: the import reads exactly the files the recursive listing
    (the one predict uses) gives, or says which class folder holds too few."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for dom in ("s", "t"):
            for i, rel in enumerate([*files, "c0/base0.png", "c0/base1.png", "c1/base0.png",
                                     "c1/base1.png"]):
                p = root / dom / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (8, 8), i * 7 % 256).save(p, format="PNG")
        try:
            out = import_image_folders(root / "s", root / "t", root / "o")
        except DataError as e:
            assert "class folder" in str(e) or "has 1 image" in str(e), str(e)
            return
        listed = sorted(p.relative_to(root / "s").as_posix()
                        for p in list_image_files(root / "s"))
        rows = [r.split(",") for r in (out / "index.csv").read_text().splitlines()[1:]]
        assert sorted(r[4] for r in rows if r[0] == "source") == listed
        assert not any("/." in "/" + f for f in listed)


names_json = st.one_of(
    st.none(), st.integers(), st.text(max_size=8),
    st.lists(st.one_of(st.text(max_size=6), st.integers(), st.none(),
                       st.dictionaries(st.text(max_size=2), st.integers(), max_size=1)),
             max_size=5),
)


@FUZZ
@given(names=names_json)
def test_manifest_class_names_are_k_strings_or_a_data_error(base_data, names):
    import json

    with _damaged_copy(base_data, []) as root:
        man = json.loads((root / "manifest.json").read_text())
        man["class_names"] = names
        (root / "manifest.json").write_text(json.dumps(man))
        try:
            summary = check_data(DataConfig(path=str(root)))
        except DataError as e:
            assert "manifest.json: class_names" in str(e)
            return
        got = summary.class_names
        assert got is None or (len(got) == 3 and all(isinstance(n, str) for n in got)
                               and len(set(got)) == 3)


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("$\\{}^_a1 frac"), max_size=16))
def test_any_label_is_drawn_literally(text):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    ax = fig.add_subplot()
    ax.set_ylabel(escape_mathtext(text))
    ax.set_title(escape_mathtext(text))
    fig.savefig(io.BytesIO(), format="png")  # a mathtext parse error would raise here
    assert ax.get_ylabel().replace("\\$", "$") == text


@FUZZ
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=4, max_dims=4, max_side=5),
                    elements=st.floats(-1e6, 1e6)),
       rgb=st.one_of(st.none(), st.lists(st.integers(-1, 5), min_size=1, max_size=4)),
       stretch=st.sampled_from(["linear", "asinh", "lupton", "log"]),
       per_image=st.booleans())
def test_to_rgb_gives_uint8_rgb_or_an_input_error(x, rgb, stretch, per_image):
    try:
        out = to_rgb(x, rgb=rgb, stretch=stretch, per_image=per_image)
    except InputError:
        return
    n, _, h, w = x.shape
    assert out.dtype == np.uint8 and out.shape == (n, h, w, 3)


@FUZZ
@given(x_s=hnp.arrays(np.float32, (3, 2, 8, 8), elements=st.floats(-1e3, 1e3, width=32)),
       x_t=hnp.arrays(np.float32, (2, 2, 8, 8), elements=st.floats(-1e3, 1e3, width=32)),
       mode=st.sampled_from(["half", "none", "per_band_standard", "per_band_minmax", "asinh"]))
def test_normalisation_report_is_finite_for_finite_images(x_s, x_t, mode):
    rep = normalisation_report(x_s, x_t, mode=mode)
    assert len(rep.table) == 4
    for r in rep.table:
        assert all(math.isfinite(v) for v in (r.mean, r.std, r.min, r.max))
        assert 0 <= r.floored <= 1 and 0 <= r.fallback <= 1 and r.min <= r.mean <= r.max + 1e-6


fits_shapes = st.one_of(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=20),
                        st.sampled_from([(16, 16, 3), (3, 16, 16), (1, 3, 9, 9), (16, 16, 5)]))


@SMALL
@given(shape=fits_shapes,
       hdus=st.one_of(st.none(), st.lists(st.one_of(st.sampled_from(["g", "R", "z", "q", ""]),
                                                    st.integers(-1, 5)), max_size=3)))
def test_fits_layouts_and_band_selections_read_or_say_why(shape, hdus):
    """Cubes of any shape (bands first or last), and any HDU selection: C bands of (H, W),
    or one DataError/InputError line."""
    from astropy.io import fits

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.fits"
        data = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
        fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(data, name="G"),
                      fits.ImageHDU(data, name="R")]).writeto(path)
        try:
            head = fits_bands(path, hdus=hdus)
            pixels, _ = read_fits(path, hdus=hdus)
        except InputError as e:  # DataError included
            assert "\n" not in str(e) and str(e)
            return
        assert pixels.shape == (head.size[1], head.size[0], head.bands)
        if len(shape) == 3 and hdus is None:
            assert not shape[2] < 8 <= min(shape[:2])  # bands-last cubes are refused


@SMALL
@given(argv=st.fixed_dictionaries({}, optional={
    "--seed": st.integers(-3, 2**70).map(str),
    "--per-class": st.integers(-2, 10**7).map(str),
    "--out": st.sampled_from(["g", "g.png", "g.xyz", "g.PDF", "g.npy", "sub/g.svg"]),
    "--stretch": st.sampled_from(["linear", "asinh", "lupton", "LOG", ""]),
    "--stretch-q": st.sampled_from(["8", "0", "-1", "nan", "inf", "0.5"]),
    "--rgb": st.sampled_from(["0", "0,0,0", "2,1,0", "0,1", "-1", "x", "0,,1"]),
}))
def test_cli_data_show_options_exit_0_or_2_with_one_line(base_data, argv, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        args = ["data", "show", str(base_data), "-q"]
        for k, v in argv.items():
            args += [k, str(Path(tmp) / v) if k == "--out" else v]
        if "--out" not in argv:
            args += ["--out", str(Path(tmp) / "g.png")]
        code = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code in (0, 2), err
        if code == 2:
            assert len(err) == 1 and err[0].startswith("sidda: error: "), err
