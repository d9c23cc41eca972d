"""Shared fixtures: a fixed seed for every test, tiny synthetic data folders, a config writer."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import yaml


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def _blobs(n, size, *, shift, rng):
    """n images (N, size, size, 1): class k is a bright square in quadrant k (3 classes)."""
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.05, (n, size, size, 1)).astype(np.float32)
    h = size // 2
    corners = [(0, 0), (0, h), (h, 0)]
    for i, k in enumerate(y):
        r, c = corners[k]
        x[i, r : r + h, c : c + h, 0] += 1.0
    return x + shift, y.astype(np.int64)


def write_tiny_data(root, *, n_train=48, n_test=24, size=16, seed=0, target_labels=True):
    """A tiny data folder in the Zenodo layout; the target is the source shifted by +0.5."""
    from sidda.datasets import write_layout

    rng = np.random.default_rng(seed)
    xs, ys = _blobs(n_train, size, shift=0.0, rng=rng)
    xt, yt = _blobs(n_train, size, shift=0.5, rng=rng)
    xs_te, ys_te = _blobs(n_test, size, shift=0.0, rng=rng)
    xt_te, yt_te = _blobs(n_test, size, shift=0.5, rng=rng)
    arrays = dict(x_train_s=xs, y_train_s=ys, x_test_s=xs_te, y_test_s=ys_te,
                  x_train_t=xt, x_test_t=xt_te)
    if target_labels:
        arrays.update(y_train_t=yt, y_test_t=yt_te)
    write_layout(root, arrays, manifest={"generator": "tiny-blobs", "seed": seed,
                                         "class_names": ["a", "b", "c"]})
    return root


def write_config(root, data, *, name="run", **sections):
    """Write ``root/<name>.yaml``: a tiny run ``root/runs/<name>`` on the data folder ``data``.

    A section given as a dict (``model=``, ``loss=``, ``train=``, ...) is merged over the
    defaults (model ``cnn``; 2 epochs, 1 of warm-up, batches of 16, seed 0, one thread); any
    other value (``out_dir=``) replaces the key.
    """
    cfg = {"name": name, "out_dir": str(root / "runs"), "data": {"path": str(data)},
           "model": {"name": "cnn"},
           "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1}}
    for key, value in sections.items():
        cfg[key] = cfg.get(key, {}) | value if isinstance(value, dict) else value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def tiny_data(tmp_path):
    return write_tiny_data(tmp_path / "data")


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    """The tiny data folder loaded (train and test of both domains), once per test module."""
    from sidda import DataConfig, load_domains

    root = write_tiny_data(tmp_path_factory.mktemp("tiny") / "data")
    return load_domains(DataConfig(path=str(root)))


@pytest.fixture
def tiny_config(tiny_data, tmp_path):
    from sidda import RunConfig

    return RunConfig.from_dict({
        "name": "tiny",
        "out_dir": str(tmp_path / "runs"),
        "data": {"path": str(tiny_data)},
        "model": {"name": "cnn"},
        "train": {"epochs": 3, "warmup": 1, "batch_size": 16, "seed": 0},
    })


def write_old_last(path):
    """Rewrite the ``last.pt`` at ``path`` as an older sidda wrote it: the NumPy random state
    as ``np.random.get_state()`` returns it (a NumPy array inside, which only a full unpickling
    reads), behind a valid checksum. Returns that state."""
    import hashlib
    import io

    from sidda.runs import CHECKPOINT_MAGIC, load_checkpoint

    ckpt = load_checkpoint(path)
    d = ckpt["rng"]["numpy"]
    state = (d["bit_generator"], d["key"].numpy().astype(np.uint32), d["pos"], d["has_gauss"],
             d["gauss"])
    ckpt["rng"] = {**ckpt["rng"], "numpy": state}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    body = buf.getvalue()
    path.write_bytes(CHECKPOINT_MAGIC + hashlib.sha256(body).digest() + body)
    return state


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny tensors: threads only add hand-offs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
