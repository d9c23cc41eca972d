"""Fuzzing the boundaries: the config parser, the data loaders and the CLI get random
malformed input and must answer with their documented error (ConfigError, DataError, exit 2
and one ``sidda: error:`` line), never with a traceback."""

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

from sidda import ConfigError, DataConfig, DataError, RunConfig, load_domains
from sidda.cli import main
from sidda.datasets import check_data

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
