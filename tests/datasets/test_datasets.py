import json

import numpy as np
import pytest
import torch

from sidda import DataConfig, DataError, load_domains
from sidda.datasets import batches, cycle_batches, load_split, split_indices, write_layout


def test_load_tiny_layout(tiny_data):
    d = load_domains(DataConfig(path=str(tiny_data)))
    assert d.num_classes == 3 and d.in_channels == 1 and d.image_size == 16
    assert d.train_s.x.dtype == torch.float32 and d.train_s.x.shape == (48, 1, 16, 16)
    assert d.train_t.y is not None and d.test_t.y is not None
    assert d.manifest["generator"] == "tiny-blobs"
    assert len(d.manifest["sha256"]) == 8


def test_normalisation_is_the_papers(tmp_path):
    x = np.random.default_rng(0).random((4, 8, 8, 3))  # float64 NHWC, as on Zenodo
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0.0, 1.0, 2.0, 1.0]))  # float labels, as on Zenodo
    s = load_split(tmp_path / "x.npy", tmp_path / "y.npy")
    assert torch.allclose(s.x, torch.from_numpy(2 * x - 1).permute(0, 3, 1, 2).float(), atol=1e-6)
    assert s.y.dtype == torch.int64 and s.y.tolist() == [0, 1, 2, 1]


def test_target_labels_optional(tmp_path):
    from conftest import write_tiny_data

    root = write_tiny_data(tmp_path / "d", target_labels=False)
    d = load_domains(DataConfig(path=str(root)))
    assert d.train_t.y is None and d.test_t.y is None and d.train_s.y is not None


def _write(tmp_path, x, y):
    np.save(tmp_path / "x.npy", x)
    if y is not None:
        np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy"


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((4, 8)), np.zeros(4), "NHW or NHWC"),
    (np.zeros((0, 8, 8)), np.zeros(0), "no images"),
    (np.zeros((4, 4, 4)), np.zeros(4), "too small"),
    (np.full((4, 8, 8), np.nan), np.zeros(4), "non-finite"),
    (np.zeros((4, 8, 8)), np.zeros(3), "3 labels for 4 images"),
    (np.zeros((4, 8, 8)), np.array([0, 1, -1, 0]), "0..K-1"),
    (np.zeros((4, 8, 8)), np.array([0, 0.5, 1, 0]), "whole numbers"),
    (np.zeros((4, 8, 8)), np.zeros((4, 2)), "1-D"),
    (np.zeros((4, 8, 8)), None, "label file not found"),
    (np.zeros((4, 9, 8, 9)), np.zeros(4), "channel axis.*data.channels_first"),
])
def test_bad_input_is_named(tmp_path, x, y, match):
    with pytest.raises(DataError, match=match):
        load_split(*_write(tmp_path, x, y))


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 8, 8)))
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="x.npy: not a readable"):
        load_split(tmp_path / "x.npy", None, require_labels=False)


def test_missing_folder_and_mismatched_domains(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_domains(DataConfig(path=str(tmp_path / "nope")))
    arrays = dict(x_train_s=np.zeros((4, 8, 8)), y_train_s=np.array([0, 1, 0, 1]),
                  x_train_t=np.zeros((4, 16, 16)), x_test_s=np.zeros((2, 8, 8)),
                  y_test_s=np.array([0, 1]), x_test_t=np.zeros((2, 8, 8)))
    write_layout(tmp_path / "d", arrays)
    with pytest.raises(DataError, match="differ in shape"):
        load_domains(DataConfig(path=str(tmp_path / "d")))


def test_write_layout_refuses_to_overwrite(tiny_data):
    with pytest.raises(FileExistsError):
        write_layout(tiny_data, {"x_train_s": np.zeros((2, 8, 8))})
    info = json.loads((tiny_data / "manifest.json").read_text())
    assert info["counts_per_class"]["y_train_s"] == [16, 16, 16]


def test_split_and_batches_are_reproducible():
    a = split_indices(100, 0.2, seed=3)
    b = split_indices(100, 0.2, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)) and len(a[1]) == 20
    e0 = batches(10, 4, seed=1, epoch=0)
    assert [len(b) for b in e0] == [4, 4, 2]
    assert sorted(torch.cat(e0).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(e0), torch.cat(batches(10, 4, seed=1, epoch=1)))


def test_cycle_batches_cover_every_item_and_resume():
    it = cycle_batches(10, 4, seed=0)
    first = [next(it) for _ in range(5)]  # 20 items = two full passes
    assert all(len(b) == 4 for b in first)
    counts = torch.bincount(torch.cat(first), minlength=10)
    assert counts.tolist() == [2] * 10
    resumed = cycle_batches(10, 4, seed=0, start=3)
    assert torch.equal(next(resumed), first[3])
    assert all(len(next(cycle_batches(3, 8, seed=0))) == 3 for _ in range(2))


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((4, 8, 8, 3, 1)), np.zeros(4), "got 5-D"),
    (np.zeros((4, 12, 10, 12)), np.zeros(4), "channel axis"),  # C last or first: unknown
    (np.array([[["a"] * 8] * 8] * 4), np.zeros(4), "must be numeric"),
    (np.full((4, 8, 8), np.inf), np.zeros(4), "image 0 has non-finite"),
    (np.zeros((4, 8, 10)), np.zeros(4), "must be square"),
    (np.zeros((4, 8, 8)), np.array([0, 1, np.nan, 0]), "whole numbers"),
    (np.zeros((4, 8, 8)), np.array(["0", "1", "0", "1"]), "labels must be numbers"),
])
def test_more_bad_input_is_named(tmp_path, x, y, match):
    with pytest.raises(DataError, match=match):
        load_split(*_write(tmp_path, x, y))


def test_label_outside_num_classes(tmp_path):
    with pytest.raises(DataError, match=r"y.npy: label 3 is outside 0..2"):
        load_split(*_write(tmp_path, np.zeros((4, 8, 8)), np.array([0, 1, 3, 2])), num_classes=3)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "object"])
def test_unreadable_npy(tmp_path, content):
    path = tmp_path / "x.npy"
    if content == "object":
        np.save(path, np.array([{}, 1], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match="x.npy: not a readable .npy"):
        load_split(path, None, require_labels=False)


def test_domains_with_different_channel_counts(tmp_path):
    arrays = dict(x_train_s=np.zeros((4, 8, 8, 3)), y_train_s=np.array([0, 1, 0, 1]),
                  x_train_t=np.zeros((4, 8, 8, 1)), x_test_s=np.zeros((2, 8, 8, 3)),
                  y_test_s=np.array([0, 1]), x_test_t=np.zeros((2, 8, 8, 3)))
    write_layout(tmp_path / "d", arrays)
    with pytest.raises(DataError, match=r"x_train_noise.npy \(1, 8, 8\)"):
        load_domains(DataConfig(path=str(tmp_path / "d")))


def test_bad_manifest_and_single_class(tiny_data):
    (tiny_data / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        load_domains(DataConfig(path=str(tiny_data)))
    (tiny_data / "manifest.json").unlink()
    for f in ("train/y_train.npy", "test/y_test.npy", "train/y_train_noise.npy",
              "test/y_test_noise.npy"):
        np.save(tiny_data / f, np.zeros(len(np.load(tiny_data / f))))
    with pytest.raises(DataError, match="single class"):
        load_domains(DataConfig(path=str(tiny_data)))


def test_empty_target_domain(tiny_data):
    np.save(tiny_data / "train" / "x_train_noise.npy", np.zeros((0, 16, 16, 1)))
    with pytest.raises(DataError, match="x_train_noise.npy: holds no images"):
        load_domains(DataConfig(path=str(tiny_data)))
