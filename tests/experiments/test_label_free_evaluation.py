"""Label-free diagnostics in every evaluation, and `evaluate --data` on a target test set alone.

One trained tiny run (source-only, accurate on source-like images) is evaluated on folders that
hold only target test images: all three classes (a healthy target), or one class only (the run
then predicts one class: the collapse flag must be raised).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_config, write_tiny_data
from sidda import RunConfig
from sidda.cli import main
from sidda.experiments import evaluate_run, evaluate_runs, prepare_data
from sidda.experiments.reuse import ensure_run
from sidda.metrics import DEFAULT_VALIDATOR
from sidda.runs import RunDir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("labelfree")
    data = write_tiny_data(root / "data")
    cfg = write_config(root, data, name="so", loss={"method": "source_only"},
                       train={"epochs": 4, "batch_size": 8})
    assert main(["train", "-q", "--config", str(cfg), "--evaluate"]) == 0
    torch.set_num_threads(n)
    return root / "runs" / "so"


def _copy(run, tmp_path, *, data_path=None):
    """A copy of the run in tmp_path; ``data_path`` replaces the data folder it names."""
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    cfg = RunConfig.from_yaml(copy / "config.yaml")
    path = cfg.data.path if data_path is None else str(data_path)
    (copy / "config.yaml").write_text(cfg.override(
        [f"out_dir={str(tmp_path / 'runs')!r}", f"data.path={path!r}"]).to_yaml())
    if data_path is not None:
        info = json.loads((copy / "run.json").read_text())
        (copy / "run.json").write_text(json.dumps(info | {"data_path": str(data_path)}))
    return copy


def _target_only(run, folder, *, classes):
    """``folder/test/x_test_noise.npy`` (+ labels): the run's source test images of
    ``classes``, three times over; nothing else in the folder."""
    data = RunConfig.from_yaml(run / "config.yaml").data.path
    x, y = (np.load(f"{data}/test/{k}_test.npy") for k in ("x", "y"))
    keep = np.flatnonzero(np.isin(y, classes))
    (folder / "test").mkdir(parents=True)
    np.save(folder / "test" / "x_test_noise.npy", np.concatenate([x[keep]] * 3))
    np.save(folder / "test" / "y_test_noise.npy", np.concatenate([y[keep]] * 3))
    return folder


def _entropy(p):
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


# --------------------------------------------------------------------- every evaluation


def test_every_evaluation_records_label_free_diagnostics_of_the_target_test_images(run):
    m = RunDir(run).metrics()
    lf = m["label_free"]
    cfg = RunConfig.from_yaml(run / "config.yaml")
    sets = prepare_data(cfg)[1]
    counts = np.bincount(sets["train_s"].y.numpy(), minlength=3)
    assert json.loads((run / "run.json").read_text())["source_class_counts"] == counts.tolist()
    probs = np.load(run / "probs_target.npy").astype(np.float64)  # the target test images
    assert lf["n"] == {"target": len(probs), "source": len(sets["val_s"])}
    predicted = np.bincount(probs.argmax(1), minlength=3) / len(probs)
    for k, name in enumerate(("a", "b", "c")):
        frac = lf["class_fractions"][name]
        assert frac["target_predicted"] == pytest.approx(predicted[k])
        assert frac["source_labels"] == pytest.approx(counts[k] / counts.sum())
    # the numbers read the target predictions of the arrays beside them (float32 softmax)
    assert lf["mean_confidence"]["target"] == pytest.approx(probs.max(1).mean(), abs=1e-5)
    im = _entropy(probs.mean(0)) - _entropy(probs).mean()  # information maximisation
    assert lf["validators"]["im"] == pytest.approx(im, abs=1e-5)
    assert lf["collapse"]["flag"] in (True, False) and lf["domain_distance"]["pad"] is not None
    assert m["notes"] == []
    assert set(m["data_folders"].values()) == {str(Path(cfg.data.path).resolve())}


def test_an_old_evaluation_and_run_json_are_completed_by_report_and_compare(run, tmp_path):
    """An evaluation without `label_free` (and a run.json without class counts), as an older
    sidda wrote them, is evaluated again by `evaluate_runs` (what `sidda report` calls) and by
    the reuse rule of compare and sweep; the counts are recomputed from the training data."""
    expected = RunDir(run).metrics()["label_free"]
    for i, reuse in enumerate((lambda r: evaluate_runs([r])[0],
                               lambda r: ensure_run(RunConfig.from_yaml(r / "config.yaml")))):
        copy = _copy(run, tmp_path / str(i))
        old = json.loads((copy / "metrics.json").read_text())
        del old["label_free"], old["notes"]
        (copy / "metrics.json").write_text(json.dumps(old))
        info = json.loads((copy / "run.json").read_text())
        del info["source_class_counts"]
        (copy / "run.json").write_text(json.dumps(info))
        assert RunDir(copy).needs_evaluation()
        got = reuse(copy)["label_free"]
        assert got["class_fractions"] == expected["class_fractions"]
        assert got["validators"] == pytest.approx(expected["validators"])
        assert not RunDir(copy).needs_evaluation()


# ---------------------------------------------------------- collapse, from the command line


def test_a_target_of_one_class_raises_the_collapse_flag_and_a_healthy_one_does_not(
        run, tmp_path, capsys):
    counts = np.array(json.loads((run / "run.json").read_text())["source_class_counts"])
    share_b = counts[1] / counts.sum()
    one = _target_only(run, tmp_path / "one_class", classes=[1])
    assert main(["evaluate", "-q", str(run), "--data", str(one)]) == 0
    out = capsys.readouterr().out
    m = RunDir(run).eval_dir(one).metrics()
    assert m["target"]["accuracy"] == 1.0  # right on every image: only the balance is off
    col = m["label_free"]["collapse"]
    assert col["flag"] is True and col["over_predicted"] == ["b"]
    assert col["missing"] == ["a", "c"]
    assert f"COLLAPSE? class 'b' takes 1.00 of the target (source share {share_b:.2f})" in out
    assert "COLLAPSE? class 'a' is never predicted on the target" in out
    assert "label-free validators" in out and f"{DEFAULT_VALIDATOR}*" in out

    healthy = _target_only(run, tmp_path / "all_classes", classes=[0, 1, 2])
    assert main(["evaluate", "-q", str(run), "--data", str(healthy)]) == 0
    out = capsys.readouterr().out
    m = RunDir(run).eval_dir(healthy).metrics()
    assert m["target"]["accuracy"] == 1.0 and m["label_free"]["collapse"]["flag"] is False
    assert "COLLAPSE?" not in out and "collapse: not raised" in out


# ---------------------------------------------------------- evaluate --data, target test alone


def test_evaluate_on_a_labelled_target_test_set_alone(run, tmp_path, capsys):
    """The folder holds test/x_test_noise.npy and y_test_noise.npy only: the target is
    evaluated; the source test metrics, temperature and selection come from the run's own
    data folder, and say so."""
    folder = _target_only(run, tmp_path / "survey", classes=[0, 1, 2])
    own = RunDir(run).metrics()
    assert main(["evaluate", str(run), "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    m = RunDir(run).eval_dir(folder).metrics()
    data = str(Path(RunConfig.from_yaml(run / "config.yaml").data.path).resolve())
    assert m["data_folders"] == {"target_test": str(folder.resolve()), "source_test": data,
                                 "validation": data}
    assert m["source"] == own["source"]
    # the temperature is refitted on the same validation logits: equal up to float32 rounding
    assert m["temperature"].keys() == own["temperature"].keys()
    for key, value in own["temperature"].items():
        if isinstance(value, float):
            assert m["temperature"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        else:
            assert m["temperature"][key] == value, key
    assert m["target"]["n"] == 3 * 24 and m["target"]["labelled"] is True
    assert m["selection"]["candidates"]  # the run's validation split: selection works
    assert f"note: source test metrics are of the run's own data folder {data}" in out
    assert "batch_size" not in out


def test_evaluate_on_a_target_test_set_when_the_runs_data_is_gone(run, tmp_path, capsys):
    copy = _copy(run, tmp_path, data_path=tmp_path / "moved_away")
    folder = _target_only(run, tmp_path / "survey", classes=[0, 1, 2])
    (folder / "test" / "y_test_noise.npy").unlink()  # unlabelled, too
    assert main(["evaluate", "-q", str(copy), "--data", str(folder)]) == 0
    captured = capsys.readouterr()
    m = RunDir(copy).eval_dir(folder).metrics()
    assert "source" not in m and m["target"]["labelled"] is False
    assert m["temperature"]["value"] is None and m["selection"]["candidates"] == {}
    assert m["data_folders"]["validation"] is None
    lf = m["label_free"]  # the class counts of run.json; no source side
    assert lf["n"] == {"target": 72, "source": 0} and lf["collapse"]["flag"] is False
    assert lf["validators"]["im"] is not None and lf["validators"]["knn"] is None
    assert "needs labelled source validation samples" in lf["validators_skipped"]["knn"]
    notes = " ".join(m["notes"])
    assert "source test metrics left out" in notes and "is gone" in notes
    assert "temperature scaling, checkpoint selection" in notes
    assert "note: source test metrics left out" in captured.out
    assert "batch_size" not in captured.out + captured.err
    assert not (RunDir(copy).eval_dir(folder).path / "probs_source.npy").exists()


def test_a_small_training_split_elsewhere_is_noted_not_a_batch_size_error(run, tmp_path,
                                                                          capsys):
    """Another full folder whose training split is smaller than train.batch_size, with the
    run's own data gone: evaluated, temperature left out with a note on the split."""
    copy = _copy(run, tmp_path, data_path=tmp_path / "moved_away")
    small = write_tiny_data(tmp_path / "small", n_train=6, n_test=12)
    assert main(["evaluate", "-q", str(copy), "--data", str(small)]) == 0
    out = capsys.readouterr().out
    m = RunDir(copy).eval_dir(small).metrics()
    assert m["source"]["n"] == 12 and m["temperature"]["value"] is None
    assert "do not rebuild it" in " ".join(m["notes"]) and "batch_size" not in out


def test_too_few_target_images_leave_validators_out_with_a_reason(run, tmp_path, capsys):
    folder = _target_only(run, tmp_path / "tiny", classes=[1])
    x = np.load(folder / "test" / "x_test_noise.npy")[:2]
    np.save(folder / "test" / "x_test_noise.npy", x)
    (folder / "test" / "y_test_noise.npy").unlink()
    assert main(["evaluate", "-q", str(run), "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    lf = RunDir(run).eval_dir(folder).metrics()["label_free"]
    assert lf["n"]["target"] == 2 and lf["validators"]["im"] is None
    assert "2 target images for 3 classes" in lf["validators_skipped"]["im"]
    assert "im not computed: 2 target images for 3 classes" in out
    assert lf["collapse"]["flag"] is False  # too few images to raise it


@pytest.mark.parametrize(("files", "message"), [
    ({"test/x_test.npy"}, "needs at least the target test images"),
    ({"test/x_test_noise.npy"}, "images of shape"),
])
def test_unusable_target_folders_exit_2_and_write_nothing(run, tmp_path, capsys, files, message):
    folder = tmp_path / "bad"
    (folder / "test").mkdir(parents=True)
    for f in files:
        np.save(folder / f, np.zeros((4, 12, 12, 1), np.float32))  # the model takes 16x16
    assert main(["evaluate", "-q", str(run), "--data", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not RunDir(run).eval_dir(folder).path.exists()


def test_a_rule_that_cannot_pick_says_why(run, tmp_path, capsys):
    copy = _copy(run, tmp_path, data_path=tmp_path / "moved_away")
    folder = _target_only(run, tmp_path / "survey", classes=[0, 1, 2])
    assert main(["evaluate", "-q", str(copy), "--data", str(folder), "--checkpoint", "im"]) == 2
    err = capsys.readouterr().err
    assert "the 'im' rule cannot pick a checkpoint" in err and "validation split" in err
    assert not RunDir(copy).eval_dir(folder).path.exists()


def test_evaluate_run_can_leave_the_diagnostics_out(run, tmp_path):
    copy = _copy(run, tmp_path)
    m = evaluate_run(copy, calibration=False, selection=False, label_free=False)
    assert "label_free" not in m and RunDir(copy).needs_evaluation()


def test_a_folder_without_manifest_takes_the_runs_target_suffix(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps(info | {"target_suffix": "_sky"}))
    folder = _target_only(run, tmp_path / "survey", classes=[0, 2])
    test = folder / "test"
    for kind in ("x", "y"):
        (test / f"{kind}_test_noise.npy").rename(test / f"{kind}_test_sky.npy")
    assert main(["evaluate", "-q", str(copy), "--data", str(folder)]) == 0
    m = RunDir(copy).eval_dir(folder).metrics()
    assert m["target"]["n"] == 3 * 16 and m["target"]["accuracy"] == 1.0
    (folder / "manifest.json").write_text(json.dumps({"target_suffix": "_noise"}))
    assert main(["evaluate", "-q", str(copy), "--data", str(folder)]) == 2  # the manifest's
    assert "x_test_noise.npy: file not found" in capsys.readouterr().err
