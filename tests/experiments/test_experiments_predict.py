"""``sidda predict`` and label-free ``--checkpoint`` rules, on real trained runs.

The predictions are checked against an independent path: the per-image arrays that
``sidda evaluate`` wrote for the same test images (its own loading, its own forward pass).
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import write_tiny_data
from sidda import RunConfig
from sidda.cli import main
from sidda.evaluate import PICK_RULES
from sidda.experiments import evaluate_run, train_run
from sidda.experiments.prediction import predict_run, resolve_checkpoint
from sidda.runs import model_checkpoints


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _probs(rows, names=("a", "b", "c")):
    return np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A robust-SIDDA run (one BatchNorm set per domain) that kept every epoch, evaluated."""
    root = tmp_path_factory.mktemp("predict")
    data = write_tiny_data(root / "data")
    cfg = RunConfig.from_dict({
        "name": "r", "out_dir": str(root / "runs"), "data": {"path": str(data)},
        "model": {"name": "cnn"},
        "train": {"epochs": 3, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1,
                  "keep_epoch_checkpoints": True},
    })
    run_dir = train_run(cfg)
    evaluate_run(run_dir)
    return run_dir


def test_epoch_checkpoints_are_candidates_of_the_selection(run):
    names = model_checkpoints(run)
    assert names[:3] == ["final", "best_val_acc", "best_val_loss"]
    assert names[3:] == ["epoch_0001", "epoch_0002", "epoch_0003"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert sorted(metrics["selection"]["candidates"]) == sorted(names)
    assert metrics["selection"]["candidates"]["epoch_0002"]["epoch"] == 2


def test_predicting_the_target_test_file_matches_evaluate(run, tmp_path):
    data = json.loads((run / "run.json").read_text())["data_path"]
    out = tmp_path / "p.csv"
    res = predict_run(run, f"{data}/test/x_test_noise.npy", out)
    rows = _rows(out)
    expect = np.load(run / "probs_target.npy")
    assert len(rows) == len(expect) == res["n"]
    np.testing.assert_allclose(_probs(rows), expect, rtol=1e-5, atol=1e-6)
    assert [r["predicted"] for r in rows] == [("a", "b", "c")[k] for k in expect.argmax(1)]
    assert res["domain"] == "target" and sum(res["counts"]) == len(rows)


def test_source_statistics_on_request_match_the_source_evaluation(run, tmp_path):
    data = json.loads((run / "run.json").read_text())["data_path"]
    out = tmp_path / "s.csv"
    predict_run(run, f"{data}/test/x_test.npy", out, domain="source", latents=True)
    rows = _rows(out)
    np.testing.assert_allclose(_probs(rows), np.load(run / "probs_source.npy"), rtol=1e-5,
                               atol=1e-6)
    z = np.array([[float(r[f"z_{i}"]) for i in range(256)] for r in rows])
    np.testing.assert_allclose(z, np.load(run / "latents_source.npy"), rtol=1e-4, atol=1e-5)


def test_temperature_divides_the_logits(run, tmp_path):
    data = json.loads((run / "run.json").read_text())["data_path"]
    out = tmp_path / "t.csv"
    res = predict_run(run, f"{data}/test/x_test_noise.npy", out, temperature=True)
    t = json.loads((run / "metrics.json").read_text())["temperature"]["value"]
    assert res["temperature"] == pytest.approx(t)
    logits = torch.from_numpy(np.load(run / "logits_target.npy"))
    expect = torch.softmax(logits / t, dim=1).numpy()
    np.testing.assert_allclose(_probs(_rows(out)), expect, rtol=1e-4, atol=1e-6)


def test_a_rule_resolves_to_the_evaluated_pick(run):
    rules = json.loads((run / "metrics.json").read_text())["selection"]["rules"]
    for rule in PICK_RULES:
        assert resolve_checkpoint(run, rule) == rules[rule]["checkpoint"]


def test_evaluate_with_a_rule_evaluates_its_pick(run, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    rep = evaluate_run(copy, checkpoint="entropy", calibration=False)
    pick = rep["selection"]["rules"]["entropy"]["checkpoint"]
    assert rep["checkpoint"] == pick and rep["checkpoint_rule"] == "entropy"
    cand = rep["selection"]["candidates"][pick]
    assert rep["target"]["accuracy"] == pytest.approx(cand["target_accuracy"])
    # the pick minimises the mean target-validation entropy over every saved checkpoint
    ent = {k: -v["validators"]["entropy"] for k, v in rep["selection"]["candidates"].items()}
    assert ent[pick] == min(ent.values())


def test_predict_cli_and_its_errors(run, tmp_path, capsys):
    data = json.loads((run / "run.json").read_text())["data_path"]
    out = tmp_path / "c.csv"
    assert main(["predict", str(run), f"{data}/test/x_test_noise.npy", "--out", str(out),
                 "--checkpoint", "epoch_0002"]) == 0
    assert "wrote" in capsys.readouterr().out and len(_rows(out)) == 24
    fresh = tmp_path / "fresh"
    shutil.copytree(run, fresh)
    (fresh / "metrics.json").unlink()
    for argv, message in [
        ([str(fresh), f"{data}/test/x_test.npy", "--checkpoint", "iwv"], "sidda evaluate"),
        ([str(run), f"{data}/test/x_test.npy", "--checkpoint", "epoch_0009"], "has: final"),
        ([str(run), str(tmp_path / "absent.npy")], "no such file"),
        ([str(tmp_path), f"{data}/test/x_test.npy"], "not a run directory"),
    ]:
        assert main(["predict", *argv, "--out", str(tmp_path / "x.csv")]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(SystemExit) as exc:  # argparse refuses the name itself
        main(["predict", str(run), f"{data}/test/x_test.npy", "--checkpoint", "nope", "--out",
              str(tmp_path / "x.csv")])
    assert exc.value.code == 2 and "unknown checkpoint 'nope'" in capsys.readouterr().err
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((2, 16, 16, 3), np.float32))
    assert main(["predict", str(run), str(rgb), "--out", str(tmp_path / "x.csv")]) == 2
    assert "3 channel(s) but the model takes 1" in capsys.readouterr().err


def _png_folders(root, n=12, size=20):
    """Source and target folders of 8-bit PNGs, one sub-folder per class (quadrant blobs)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for dom, shift in (("src", 0), ("tgt", 60)):
        for k, name in enumerate(("a", "b", "c")):
            (root / dom / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 40, (size, size)).astype(np.uint8) + shift
                r, c = [(0, 0), (0, 10), (10, 0)][k]
                img[r : r + 10, c : c + 10] += 120
                Image.fromarray(img.astype(np.uint8)).save(root / dom / name / f"{i}.png")
    return root / "src", root / "tgt"


def test_predicting_image_files_matches_evaluate_on_the_imported_folder(tmp_path, capsys):
    """PNG files -> import-folder -> train -> evaluate; predicting the same PNG files gives the
    probabilities evaluate gave their imported copies (index.csv maps files to rows)."""
    src, tgt = _png_folders(tmp_path / "img")
    data = tmp_path / "data"
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(data),
                 "--image-size", "16", "-q"]) == 0
    cfg = RunConfig.from_dict({
        "name": "png", "out_dir": str(tmp_path / "runs"), "data": {"path": str(data)},
        "train": {"epochs": 2, "warmup": 1, "batch_size": 8, "threads": 1},
    })
    run = train_run(cfg)
    evaluate_run(run, calibration=False, selection=False)
    out = tmp_path / "p.csv"
    predict_run(run, tgt, out)
    by_name = {r["name"]: r for r in _rows(out)}
    assert len(by_name) == 36
    with open(data / "index.csv", newline="") as f:
        test_t = {int(r["index"]): r["file"] for r in csv.DictReader(f)
                  if r["domain"] == "target" and r["split"] == "test"}
    expect = np.load(run / "probs_target.npy")
    got = _probs([by_name[test_t[i]] for i in range(len(expect))])
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    # FITS files for a run imported from PNGs are read, scaled otherwise: a warning says so
    from astropy.io import fits

    assert "scales differently" not in capsys.readouterr().err  # the log of `main -q` above
    (tmp_path / "cutouts").mkdir()
    fits.PrimaryHDU(np.zeros((20, 20), np.float32)).writeto(tmp_path / "cutouts" / "x.fits")
    predict_run(run, tmp_path / "cutouts", tmp_path / "q.csv")
    said = [ln for ln in capsys.readouterr().err.splitlines() if "scales differently" in ln]
    assert len(said) == 1 and "1 FITS file(s) (x.fits)" in said[0]
    assert "trained on PNG/JPEG/TIFF files" in said[0] and len(_rows(tmp_path / "q.csv")) == 1


def test_predicting_fits_cutouts_of_five_bands(tmp_path):
    """FITS cubes -> import-folder -> train; predicting the same files matches evaluate."""
    from astropy.io import fits

    rng = np.random.default_rng(1)
    for dom, shift in (("src", 0.0), ("tgt", 3.0)):
        for k, name in enumerate(("e", "s")):
            (tmp_path / dom / name).mkdir(parents=True)
            for i in range(10):
                cube = rng.normal(shift, 1.0, (5, 16, 16)).astype(np.float32)
                cube[:, : 8 * (k + 1) // 2 + 4] += 4.0
                fits.PrimaryHDU(cube).writeto(tmp_path / dom / name / f"{i}.fits")
    data = tmp_path / "data"
    assert main(["data", "import-folder", str(tmp_path / "src"), str(tmp_path / "tgt"),
                 "--out", str(data), "-q"]) == 0
    cfg = RunConfig.from_dict({
        "name": "f", "out_dir": str(tmp_path / "runs"),
        "data": {"path": str(data), "normalize": "asinh"},
        "train": {"epochs": 2, "warmup": 1, "batch_size": 8, "threads": 1},
    })
    run = train_run(cfg)
    evaluate_run(run, calibration=False, selection=False)
    out = tmp_path / "p.csv"
    predict_run(run, tmp_path / "tgt", out)
    by_name = {r["name"]: r for r in _rows(out)}
    with open(data / "index.csv", newline="") as f:
        test_t = {int(r["index"]): r["file"] for r in csv.DictReader(f)
                  if r["domain"] == "target" and r["split"] == "test"}
    expect = np.load(run / "probs_target.npy")
    got = _probs([by_name[test_t[i]] for i in range(len(expect))], names=("e", "s"))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
