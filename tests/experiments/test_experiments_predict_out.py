"""``sidda predict`` on a first day: where ``--out`` may write, which files it reads, what it
says about BatchNorm statistics, images the model cannot take, and class folders scored."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import write_tiny_data
from sidda import RunConfig
from sidda.cli import main
from sidda.experiments import train_run


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train(root, method):
    data = root / "data"
    if not data.exists():
        write_tiny_data(data)
    return train_run(RunConfig.from_dict({
        "name": method, "out_dir": str(root / "runs"), "data": {"path": str(data)},
        "loss": {"method": method},
        "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1}}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_day")
    return {m: _train(root, m) for m in ("sidda", "source_only")}


@pytest.fixture
def images(runs, tmp_path):
    x = np.load(runs["sidda"].parent.parent / "data" / "test" / "x_test_noise.npy")[:6]
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path


def test_out_in_a_missing_folder_is_created(runs, images, tmp_path):
    out = tmp_path / "new" / "deeper" / "p.csv"
    assert main(["predict", str(runs["sidda"]), str(images), "--out", str(out), "-q"]) == 0
    assert len(_rows(out)) == 6


def test_a_bad_out_path_is_refused_before_predicting(runs, images, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["predict", str(runs["sidda"]), str(images), "--out",
                 str(tmp_path / "afile" / "p.csv")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["input", "run_file", "other", "folder_input"])
def test_out_never_replaces_what_it_should_not(runs, images, tmp_path, capsys, target):
    run = runs["sidda"]
    out = {"input": images, "run_file": run / "config.yaml", "other": tmp_path / "notes.txt",
           "folder_input": tmp_path / "imgs" / "a.png"}[target]
    images_arg = images
    if target == "other":
        out.write_text("my notes\n")
    if target == "folder_input":
        out.parent.mkdir()
        Image.fromarray(np.full((16, 16), 128, np.uint8)).save(out)
        images_arg = out.parent
    before = out.read_bytes()
    assert main(["predict", str(run), str(images_arg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0]
    assert out.read_bytes() == before


def test_force_replaces_and_a_predictions_csv_is_replaced_without_it(runs, images, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    assert main(["predict", str(runs["sidda"]), str(images), "--out", str(other), "--force",
                 "-q"]) == 0
    assert len(_rows(other)) == 6
    out = tmp_path / "p.csv"
    for _ in range(2):  # the second run replaces a CSV that predict wrote
        assert main(["predict", str(runs["sidda"]), str(images), "--out", str(out), "-q"]) == 0
    new = runs["sidda"] / "mine.csv"  # a new file inside a run folder is fine
    assert main(["predict", str(runs["sidda"]), str(images), "--out", str(new), "-q"]) == 0


def test_report_out_refuses_a_file_that_is_not_a_report(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    other = tmp_path / "keep.txt"
    other.write_text("keep")
    assert main(["report", str(runs["sidda"]), "--out", str(other)]) == 2
    assert "not an HTML report" in capsys.readouterr().err and other.read_text() == "keep"


def test_batchnorm_statistics_are_named_only_for_runs_with_two_sets(runs, images, tmp_path,
                                                                    capsys):
    for method, named in (("sidda", True), ("source_only", False)):
        out = tmp_path / f"{method}.csv"
        assert main(["predict", str(runs[method]), str(images), "--out", str(out)]) == 0
        assert ("target BatchNorm statistics" in capsys.readouterr().out) is named


def test_upper_case_npy_is_read_and_npz_is_refused(runs, images, tmp_path, capsys):
    upper = tmp_path / "UP.NPY"
    upper.write_bytes(images.read_bytes())
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", str(runs["sidda"]), str(images), "--out", str(a), "-q"]) == 0
    assert main(["predict", str(runs["sidda"]), str(upper), "--out", str(b), "-q"]) == 0
    assert [r["p_a"] for r in _rows(a)] == [r["p_a"] for r in _rows(b)]
    np.savez(tmp_path / "x.npz", x=np.load(images))
    assert main(["predict", str(runs["sidda"]), str(tmp_path / "x.npz"), "--out",
                 str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert "not supported" in err and "save the images as one .npy" in err
    assert not (tmp_path / "c.csv").exists()


def test_huge_pixel_values_exit_2_naming_the_images(runs, images, tmp_path, capsys):
    x = np.load(images)
    x[[1, 4]] = 1e30  # finite float32, far beyond anything the network was trained on
    bad = tmp_path / "bad.npy"
    np.save(bad, x)
    out = tmp_path / "bad.csv"
    assert main(["predict", str(runs["source_only"]), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 image(s) give NaN or inf outputs (1, 4)" in err and not out.exists()


def _class_folders(root, names, runs):
    """PNGs of the target test images in folders ``names[label]``; the labels."""
    data = runs["sidda"].parent.parent / "data" / "test"
    x, y = np.load(data / "x_test_noise.npy")[:12], np.load(data / "y_test_noise.npy")[:12]
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        scaled = np.clip(img[..., 0] / 2.0, 0, 1)  # into [0, 1] for an 8-bit PNG
        Image.fromarray((scaled * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return y


def test_class_folders_are_scored_against_a_numpy_count(runs, tmp_path, capsys):
    y = _class_folders(tmp_path / "imgs", ["a", "b", "c"], runs)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(runs["sidda"]), str(tmp_path / "imgs"), "--out", str(out)]) == 0
    rows = _rows(out)
    truth = np.array(["abc".index(r["name"].split("/")[0]) for r in rows])
    pred = np.array(["abc".index(r["predicted"]) for r in rows])
    assert sorted(truth.tolist()) == sorted(y.tolist())
    cm = np.zeros((3, 3), int)
    for t, p in zip(truth, pred, strict=True):
        cm[t, p] += 1
    rep = json.loads((tmp_path / "preds.report.json").read_text())
    assert rep["confusion_matrix"] == cm.tolist()
    assert rep["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for k, name in enumerate("abc"):
        col, row = cm[:, k].sum(), cm[k].sum()
        assert rep["report"][name]["precision"] == pytest.approx(cm[k, k] / col if col else 0)
        assert rep["report"][name]["recall"] == pytest.approx(cm[k, k] / row if row else 0)
        assert rep["report"][name]["support"] == row
    printed = capsys.readouterr().out
    assert f"accuracy {rep['accuracy']:.4f}" in printed and "precision    recall" in printed
    text = (tmp_path / "preds.report.txt").read_text()
    assert "weighted avg" in text and "confusion matrix" in text


def test_folders_that_are_not_classes_give_predictions_only(runs, tmp_path, capsys):
    _class_folders(tmp_path / "imgs", ["night", "day", "dusk"], runs)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(runs["sidda"]), str(tmp_path / "imgs"), "--out", str(out)]) == 0
    assert "are not class names of the run" in capsys.readouterr().out
    assert len(_rows(out)) == 12 and not (tmp_path / "preds.report.json").exists()


def test_fits_bands_default_to_the_runs_import_and_can_be_named(tmp_path, capsys):
    fits = pytest.importorskip("astropy.io.fits")
    from sidda.datasets import import_image_folders

    rng = np.random.default_rng(0)
    for dom in ("s", "t"):
        for k, c in enumerate(("elliptical", "spiral")):
            (tmp_path / dom / c).mkdir(parents=True)
            for i in range(12):
                hdus = [fits.PrimaryHDU()] + [
                    fits.ImageHDU(rng.normal(10 * (b + 1) + 3 * k, 1.0, (16, 16))
                                  .astype(np.float32), name=n)
                    for b, n in enumerate("grz")]
                fits.HDUList(hdus).writeto(tmp_path / dom / c / f"{i}.fits")
    data = import_image_folders(tmp_path / "s", tmp_path / "t", tmp_path / "d",
                                hdus=["z", "r", "g"])
    run = train_run(RunConfig.from_dict({
        "name": "fits", "out_dir": str(tmp_path / "runs"), "data": {"path": str(data)},
        "train": {"epochs": 2, "warmup": 1, "batch_size": 8, "threads": 1}}))
    one = tmp_path / "t" / "spiral" / "3.fits"

    def probs(*opts):
        out = tmp_path / f"p{len(list(tmp_path.glob('p*.csv')))}.csv"
        assert main(["predict", str(run), str(one), "--out", str(out), "-q", *opts]) == 0
        return [float(v) for k, v in _rows(out)[0].items() if k.startswith("p_")]

    recorded = probs()  # the run's import stacked z, r, g: predict does the same by default
    assert probs("--bands", "Z,R,G") == recorded
    assert probs("--hdu", "3,2,1") == recorded  # HDU 1 is g, 2 r, 3 z
    assert probs("--bands", "g,r,z") != recorded  # the order reaches the model
    assert main(["predict", str(run), str(one), "--out", str(tmp_path / "x.csv"),
                 "--bands", "G,R,U"]) == 2
    assert "U" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
