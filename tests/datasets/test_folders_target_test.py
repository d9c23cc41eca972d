"""`data import-folder SRC TGT --target-test DIR`: a labelled target test set beside an
unlabelled (or labelled) target training set, and what evaluation makes of it."""

import json
import logging

import numpy as np
import pytest
import yaml
from PIL import Image

from sidda.cli import main
from sidda.datasets import import_image_folders, load_domains, resolve_data_config
from sidda.datasets.npyfiles import DataError

CLASSES = ("a", "b", "c")


def _class_folders(root, classes=CLASSES, n=4, size=16, level=0):
    """Grey PNGs; class k has a bright square in quadrant k."""
    rng = np.random.default_rng(len(str(root)))
    for name in classes:
        k = CLASSES.index(name) if name in CLASSES else 0
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            a = (rng.random((size, size)) * 40 + level).astype(np.uint8)
            r, c = divmod(k, 2)
            a[r * size // 2:(r + 1) * size // 2, c * size // 2:(c + 1) * size // 2] += 150
            Image.fromarray(a).save(d / f"{name}{i}.png")
    return root


def _flat(root, n=7, size=16):
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("L", (size, size), 20 * i).save(root / f"img{i}.png")
    return root


def test_unlabelled_target_and_labelled_test_folder(tmp_path):
    src = _class_folders(tmp_path / "src", n=5)
    tgt = _flat(tmp_path / "tgt", n=7)
    test = _class_folders(tmp_path / "test", n=3, level=40)
    out = import_image_folders(src, tgt, tmp_path / "d", target_test=test, random_state=2)
    x_t = np.load(out / "train" / "x_train_target.npy")
    assert x_t.shape == (7, 16, 16, 1)  # every target image trains, none is held out
    assert not (out / "train" / "y_train_target.npy").exists()
    y_test = np.load(out / "test" / "y_test_target.npy")
    assert sorted(y_test.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    x_test = np.load(out / "test" / "x_test_target.npy")
    rows = [r.split(",") for r in (out / "index.csv").read_text().splitlines()[1:]]
    test_rows = [r for r in rows if r[:2] == ["target", "test"]]
    for r in test_rows:  # each row holds the file index.csv names, with its class's label
        i = int(r[2])
        assert CLASSES[y_test[i]] == r[4].split("/")[0] == CLASSES[int(r[3])]
        with Image.open(test / r[4]) as im:
            np.testing.assert_allclose(x_test[i, :, :, 0], np.asarray(im) / 255, atol=1e-6)
    man = json.loads((out / "manifest.json").read_text())
    assert man["target_test_folder"] == str(test.resolve()) and not man["target_labelled"]
    assert man["counts_per_class"]["y_test_t"] == [3, 3, 3]
    d = load_domains(resolve_data_config(out))
    assert d.train_t.y is None and d.test_t.y is not None and len(d.test_s) == 3  # ceil(5 * .2)


def test_a_test_folder_with_a_subset_of_classes_is_mapped_and_warned(tmp_path, caplog):
    src = _class_folders(tmp_path / "src")
    tgt = _class_folders(tmp_path / "tgt")
    test = _class_folders(tmp_path / "test", classes=("c", "a"), n=2)
    with caplog.at_level(logging.WARNING):
        out = import_image_folders(src, tgt, tmp_path / "d", target_test=test)
    assert "no class folder for source class(es) ['b']" in caplog.text
    assert np.load(out / "train" / "y_train_target.npy").shape == (12,)  # labelled, all train
    y = np.load(out / "test" / "y_test_target.npy")
    assert np.bincount(y, minlength=3).tolist() == [2, 0, 2]  # c keeps label 2


@pytest.mark.parametrize("make_test, match", [
    (lambda p: _class_folders(p, classes=("a", "zebra")), r"class folder\(s\) \['zebra'\] are "
     r"not source classes \(a, b, c\)"),
    (lambda p: _flat(p), "target test folder must hold one sub-folder of images per class"),
    (lambda p: p.mkdir(), "target test folder holds no images"),
    (lambda p: None, "target test folder not found"),
])
def test_a_bad_test_folder_writes_nothing(tmp_path, capsys, make_test, match):
    src, tgt = _class_folders(tmp_path / "src"), _flat(tmp_path / "tgt")
    make_test(tmp_path / "test")
    with pytest.raises(DataError, match=match):
        import_image_folders(src, tgt, tmp_path / "d", target_test=tmp_path / "test")
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(tmp_path / "d"),
                 "--target-test", str(tmp_path / "test")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["src", "tgt"] + (["test"] if (tmp_path / "test").exists() else []))


def test_evaluate_reports_target_accuracy_on_the_test_folder(tmp_path, capsys):
    src = _class_folders(tmp_path / "src", n=8)
    tgt = _flat(tmp_path / "tgt", n=9)
    test = _class_folders(tmp_path / "test", n=3, level=30)
    out = tmp_path / "d"
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(out),
                 "--target-test", str(test), "-q"]) == 0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "r", "out_dir": str(tmp_path / "runs"), "data": {"path": str(out)},
        "model": {"name": "cnn"}, "loss": {"method": "source_only"},
        "train": {"epochs": 1, "warmup": 0, "batch_size": 8, "milestones": [],
                  "device": "cpu", "threads": 1},
    }))
    assert main(["train", "--config", str(config), "-q", "--evaluate"]) == 0
    run = tmp_path / "runs" / "r"
    target = json.loads((run / "metrics.json").read_text())["target"]
    labels = np.load(run / "labels_target.npy")
    np.testing.assert_array_equal(labels, np.load(out / "test" / "y_test_target.npy"))
    assert np.array(target["confusion_matrix"]).sum() == 9
    probs = np.load(run / "probs_target.npy")
    assert target["accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())
