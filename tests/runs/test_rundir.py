"""The run directory (RunDir): its states, run.json, one reader per file, and what it protects.

Sections: the lifecycle; ``run.json`` (RunInfo); damaged files (each reader names its file, and
evaluation files are re-evaluated); links and special files (nothing is written through them);
evaluation folders (one per data folder); the run's own records (target suffix, import
settings) over the data folder's present state; reuse of finished runs by compare and sweep.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import write_config, write_tiny_data
from sidda import DataConfig, InputError, RunConfig, load_domains
from sidda.cli import main
from sidda.datasets import DataError
from sidda.experiments import evaluate_run, run_config
from sidda.experiments.prediction import load_images, predict_run
from sidda.experiments.reuse import ensure_run
from sidda.runs import (
    LOCK_NAME,
    DamagedFileError,
    History,
    RunDir,
    RunInfo,
    RunState,
    atomic_write,
    lock_run,
)
from sidda.runs.rundir import ARGV, INFO, METRICS, SETUP_FILES, SUMMARY

#: What `sidda data import-folder` records; predictions must read images the same way.
IMPORTED = {"generator": "image-folder", "image_size": 16, "fit": "stretch"}
RECORD = RunInfo("sidda", "cnn", 1, 3, 16, "/data/d", target_suffix="_noise",
                class_names=("a", "b", "c"), sizes={"train_s": 39, "val_s": 9}, world_size=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished, evaluated run on data "imported" at size 16 with fit=stretch; tests that
    change it work on a copy (:func:`_copy`)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("rundir")
    data = write_tiny_data(root / "data")
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps(manifest | IMPORTED))
    cfg = write_config(root, data, name="base", model={"latent_dim": 16})
    assert main(["train", "-q", "--config", str(cfg)]) == 0
    run = root / "runs" / "base"
    assert main(["evaluate", "-q", str(run)]) == 0
    torch.set_num_threads(n)
    return run


def _copy(trained, tmp_path, *, data=False):
    """A copy of the run in ``tmp_path/runs`` (and of its data in ``tmp_path/data`` with
    ``data``); its config.yaml names where they now are, as if trained there."""
    run = tmp_path / "runs" / trained.name
    shutil.copytree(trained, run)
    cfg = RunConfig.from_yaml(run / "config.yaml")
    path = cfg.data.path
    if data:
        path = str(tmp_path / "data")
        shutil.copytree(cfg.data.path, path)
    (run / "config.yaml").write_text(
        cfg.override([f"out_dir={str(tmp_path / 'runs')!r}", f"data.path={path!r}"]).to_yaml())
    return run


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error: "), err
    return err[0]


def _evaluation(n=6, k=3, *, labelled=True):
    rng = np.random.default_rng(0)
    arrays = {}
    for dom in ("source", "target"):
        logits = rng.normal(size=(n, k)).astype(np.float32)
        arrays[dom] = {"logits": logits, "probs": np.exp(logits) / np.exp(logits).sum(1)[:, None],
                       "latents": rng.normal(size=(n, 4)).astype(np.float32)}
        if labelled or dom == "source":
            arrays[dom]["labels"] = np.arange(n) % k
    report = {"method": "sidda", "checkpoint": "best_val_loss", "n_bins": 15,
              "temperature": {"value": 1.5},
              "selection": {"candidates": {}, "rules": {"iwv": {"checkpoint": "final"}}},
              "label_free": {"collapse": {"flag": False}}}
    return report, arrays


def _synthetic_run(path):
    """A run directory written by RunDir's own writers, through every state."""
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.write_setup("name: r\n", RECORD, environment={"seed": 0}, manifest=IMPORTED,
                    argv=["sidda", "train"])
    run.write_summary(History([{"epoch": 1.0, "seconds": 0.5, "train_total": 1.0}]))
    run.publish_evaluation(*_evaluation(), own_folder=False)
    return run


# ------------------------------------------------------------------------------- lifecycle

def test_the_five_states_follow_the_files_in_the_order_they_are_written(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.state == RunState.ABSENT
    run.path.mkdir()
    for name in ("", *SETUP_FILES):  # a setup killed before (or after) each of its files
        if name:
            (run.path / name).write_text("")
        assert run.state == RunState.SETTING_UP, name
    with pytest.raises(FileNotFoundError, match=r"not a run directory \(no run.json\)"):
        run.require(RunState.SET_UP)
    run.require(RunState.SETTING_UP)  # config.yaml is there: --resume can finish the setup
    (run.path / INFO).write_text(json.dumps(RECORD.to_json()))
    assert run.state == RunState.SET_UP and run.info() == RECORD
    run.write_summary(History([{"epoch": 1.0, "seconds": 2.0, "skipped_steps": 1}]))
    assert run.state == RunState.TRAINED and run.summary()["seconds"] == 2.0
    with pytest.raises(FileNotFoundError, match=r"no metrics.json.*sidda evaluate"):
        run.require(RunState.EVALUATED)
    report, arrays = _evaluation()
    run.publish_evaluation(report, arrays, own_folder=False)
    assert run.state == RunState.EVALUATED and run.metrics() == report
    assert np.array_equal(run.array("logits", "target"), arrays["target"]["logits"])
    (run.path / "latents_target.npy").unlink()  # an incomplete evaluation
    assert run.state == RunState.TRAINED and run.needs_evaluation()
    shutil.rmtree(tmp_path / "r")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("")  # files that are not a run's
    assert run.state == RunState.ABSENT
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        run.require(RunState.SETTING_UP)


def test_write_setup_writes_run_json_last_and_clear_keeps_the_lock(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.lock("train"):
        run.write_setup("name: r\n", RECORD, environment={"seed": 3}, manifest=IMPORTED,
                        argv=["sidda", "train", "--config", "c.yaml"])
        names = {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()}
        assert set(names) == {*SETUP_FILES, INFO}
        assert names[INFO] == max(names.values())
        assert run.environment() == {"seed": 3} and run.manifest() == IMPORTED
        assert (run.path / ARGV).read_text() == "sidda train --config c.yaml\n"
        run.clear()
        assert [p.name for p in run.path.iterdir()] == [LOCK_NAME]


def test_complete_setup_finishes_a_killed_setup_and_appends_the_command(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    atomic_write(run.config_path, "name: r\n")
    atomic_write(run.path / ARGV, "sidda train --config c.yaml\n")
    (run.path / ".run.json.tmp123").write_text("half")  # a write a kill cut short
    run.complete_setup(RECORD, environment={"seed": 0}, manifest={}, argv=["sidda", "x"])
    assert run.state == RunState.SET_UP and run.info() == RECORD
    assert not list(run.path.glob(".*.tmp*"))
    assert (run.path / ARGV).read_text() == "sidda train --config c.yaml\nsidda x\n"
    (run.path / "environment.json").write_text('{"seed": 7}')  # a set-up run keeps its own
    run.complete_setup(RECORD, environment={"seed": 0}, manifest={}, argv=["sidda", "y"])
    assert run.environment() == {"seed": 7}
    assert (run.path / ARGV).read_text().splitlines()[-1] == "sidda y"


# --------------------------------------------------------------------------------- run.json

def test_run_info_round_trip_and_older_files(tmp_path):
    assert RunInfo.from_json(json.loads(json.dumps(RECORD.to_json()))) == RECORD
    old = RECORD.to_json()
    for key in ("target_suffix", "class_names", "world_size", "sizes"):
        del old[key]  # keys an older sidda did not write
    got = RunInfo.from_json(old)
    assert (got.target_suffix, got.class_names, got.world_size, got.sizes) == (None, None, 1, {})
    assert (got.method, got.in_channels, got.num_classes, got.image_size) == ("sidda", 1, 3, 16)
    two_names = RunInfo.from_json(RECORD.to_json() | {"class_names": ["a", "b"]})
    assert two_names.class_names is None  # not one per class: by number, as before
    run = RunDir(tmp_path)
    (tmp_path / INFO).write_text(json.dumps(old))
    assert run.info() == got
    for bad, says in (({"num_classes": "3"}, "num_classes is '3'"),
                      ({"in_channels": True}, "in_channels is True"),
                      ({"image_size": None}, "image_size is None"),
                      ({"sizes": [1]}, "sizes [1]")):
        (tmp_path / INFO).write_text(json.dumps(RECORD.to_json() | bad))
        with pytest.raises(DamagedFileError, match=re.escape(f"run.json: damaged ({says}")):
            run.info()


# ---------------------------------------------------------------------------- damaged files

def _cut(path, n=100):
    path.write_bytes(path.read_bytes()[:n])


def _edit_json(path, **changes):
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


DAMAGE = {  # file, how it is damaged, the reader that must name it, evaluation output?
    "metrics cut": (METRICS, lambda p: _cut(p, 20), lambda r: r.metrics(), True),
    "metrics a list": (METRICS, lambda p: p.write_text("[1, 2, 3]"), lambda r: r.metrics(), True),
    "a rule's pick": (METRICS, lambda p: _edit_json(p, selection={"rules": {"iwv": 5}}),
                      lambda r: r.pick("iwv"), True),
    "a pick's name": (METRICS, lambda p: _edit_json(
        p, selection={"rules": {"iwv": {"checkpoint": "../x"}}}), lambda r: r.pick("iwv"), True),
    "label-free part": (METRICS, lambda p: _edit_json(p, label_free=[0.5]),
                        lambda r: r.metrics(), True),
    "temperature": (METRICS, lambda p: _edit_json(p, temperature={"value": -1.0}),
                    lambda r: r.temperature(), False),
    "array cut": ("logits_source.npy", _cut, lambda r: r.array("logits", "source"), True),
    "array of objects": ("probs_target.npy",
                         lambda p: np.save(p, np.array([{}], dtype=object), allow_pickle=True),
                         lambda r: r.array("probs", "target"), True),
    "summary": (SUMMARY, lambda p: p.write_text("{"), lambda r: r.summary(), False),
    "run.json": (INFO, lambda p: p.write_text("not json"), lambda r: r.info(), False),
    "history": ("history.csv", lambda p: p.write_bytes(b"epoch,loss\n1,\xff\n"),
                lambda r: r.history(), False),
    "config": ("config.yaml", lambda p: p.write_bytes(b"name: \xff\xfe\n"),
               lambda r: r.config_text(), False),
    "config parsed": ("config.yaml", lambda p: p.write_text("train: [1\n"), run_config, False),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_every_reader_names_the_damaged_file_and_what_to_do(tmp_path, case):
    name, damage, read, from_evaluation = DAMAGE[case]
    run = _synthetic_run(tmp_path / "r")
    run.history()  # readable before
    assert not run.needs_evaluation()
    damage(run.path / name)
    with pytest.raises(DamagedFileError) as info:
        read(run)
    msg = str(info.value)
    assert msg.startswith(f"{run.path / name}: damaged (") and "\n" not in msg
    assert ("sidda evaluate" in msg) == (name == METRICS or name.endswith(".npy"))
    assert "--force" in msg or "sidda evaluate" in msg
    if case != "temperature":  # a bad T is found when T is read, not before
        assert run.needs_evaluation() == from_evaluation  # evaluating again rewrites these


def test_an_evaluation_without_label_free_diagnostics_is_incomplete(tmp_path):
    """An evaluation by an older sidda (no ``label_free``) is evaluated again by report,
    compare and sweep; ``label_free: null`` (diagnostics that could not be computed) is not."""
    run = _synthetic_run(tmp_path / "r")
    assert run.state == RunState.EVALUATED
    _edit_json(run.metrics_path, label_free=None)
    assert not run.needs_evaluation()
    old = json.loads(run.metrics_path.read_text())
    del old["label_free"]
    run.metrics_path.write_text(json.dumps(old))
    assert run.needs_evaluation() and run.state == RunState.TRAINED


def test_the_evaluation_is_read_once_and_only_where_it_matters(tmp_path, monkeypatch):
    run = _synthetic_run(tmp_path / "r")
    assert run.evaluation() == run.metrics() and run.require_evaluation() == run.metrics()
    reads = []
    real = RunDir.metrics
    monkeypatch.setattr(RunDir, "metrics", lambda self: reads.append(self) or real(self))
    assert run.state_up_to(RunState.TRAINED) == RunState.TRAINED
    assert run.state_up_to(RunState.SETTING_UP) == RunState.SETTING_UP
    assert reads == []  # below EVALUATED, metrics.json is never opened
    assert run.state == RunState.EVALUATED and len(reads) == 1
    _cut(run.metrics_path, 20)
    assert run.evaluation() is None and run.state_up_to(RunState.TRAINED) == RunState.TRAINED
    with pytest.raises(FileNotFoundError, match="no complete evaluation"):
        run.require_evaluation()


def test_list_cells_of_every_csv_are_written_one_way(tmp_path):
    """Sweep and comparison tables alike: items separated by spaces, a missing item empty
    (a sweep's summary.csv used to write it as None)."""
    import csv

    from sidda.runs import write_csv

    write_csv(tmp_path / "t.csv", [{"flags": [True, None, False], "seeds": (0, 1), "x": None,
                                    "acc": [0.25]}])
    with open(tmp_path / "t.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [
            {"flags": "True  False", "seeds": "0 1", "x": "", "acc": "0.25"}]


def test_run_json_records_the_source_class_counts_and_reads_older_files(tmp_path):
    info = RunInfo("sidda", "cnn", 1, 3, 16, "/d", source_class_counts=(4, 0, 2))
    assert info.to_json()["source_class_counts"] == [4, 0, 2]
    assert RunInfo.from_json(info.to_json()) == info
    older = info.to_json()
    del older["source_class_counts"]
    assert RunInfo.from_json(older).source_class_counts is None
    for bad in ([4, 0], [4, 0, -1], [4, 0, 2.5], [4, 0, True], "402"):
        assert RunInfo.from_json(info.to_json() | {"source_class_counts": bad}
                                 ).source_class_counts is None, bad


def test_report_reevaluates_damaged_evaluation_files_and_names_the_others(trained, tmp_path,
                                                                          capsys):
    pytest.importorskip("matplotlib")
    run = _copy(trained, tmp_path)
    _cut(run / METRICS, 30)
    _cut(run / "latents_source.npy")
    assert main(["report", "-q", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert not RunDir(run).needs_evaluation() and (tmp_path / "r.html").is_file()
    reads = []
    real = RunDir.metrics
    with pytest.MonkeyPatch.context() as mp:  # an evaluated run: metrics.json parsed once
        mp.setattr(RunDir, "metrics", lambda self: reads.append(self) or real(self))
        assert main(["report", "-q", str(run), "--out", str(tmp_path / "r1.html")]) == 0
    assert len(reads) == 2  # evaluate_runs (complete: kept), then the page
    capsys.readouterr()
    (run / "history.csv").write_bytes(b"epoch\n\xff\n")
    assert main(["report", "-q", str(run), "--out", str(tmp_path / "r2.html")]) == 2
    assert f"{run / 'history.csv'}: damaged (" in _one_error_line(capsys)
    assert not (tmp_path / "r2.html").exists()


def test_predict_names_a_damaged_pick(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    _edit_json(run / METRICS, selection={"rules": {"iwv": 5}, "candidates": {}})
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 16, 16, 1), np.float32))
    assert main(["predict", str(run), str(x), "--checkpoint", "iwv",
                 "--out", str(tmp_path / "p.csv")]) == 2
    line = _one_error_line(capsys)
    assert f"{run / METRICS}: damaged (selection.rules.iwv is 5" in line
    assert "sidda evaluate" in line and not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------- links, special files

def test_the_lock_is_never_taken_through_a_link_or_a_special_file(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    lock, victim = run / LOCK_NAME, tmp_path / "victim.txt"
    victim.write_text("important")
    for kind, make in (("a symbolic link", lambda: lock.symlink_to(victim)),
                       ("a symbolic link", lambda: lock.symlink_to(tmp_path / "missing")),
                       ("a FIFO", lambda: os.mkfifo(lock)),
                       ("a folder", lambda: lock.mkdir())):
        make()
        with pytest.raises(InputError, match=re.escape(f"{lock} is {kind}, not the regular")):
            with lock_run(run, what="evaluate"):
                pass
        lock.rmdir() if lock.is_dir() and not lock.is_symlink() else lock.unlink()
    assert victim.read_text() == "important" and not (tmp_path / "missing").exists()
    with lock_run(run, what="evaluate"):  # a regular file: locked as ever
        assert "sidda evaluate" in lock.read_text()


def test_evaluate_refuses_a_linked_or_fifo_lock(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("important")
    (run / LOCK_NAME).unlink()
    (run / LOCK_NAME).symlink_to(victim)
    assert main(["evaluate", "-q", str(run)]) == 2
    assert f"{run / LOCK_NAME} is a symbolic link" in _one_error_line(capsys)
    assert victim.read_text() == "important"
    (run / LOCK_NAME).unlink()
    os.mkfifo(run / LOCK_NAME)
    assert main(["evaluate", "-q", str(run)]) == 2
    assert f"{run / LOCK_NAME} is a FIFO" in _one_error_line(capsys)


def test_argv_is_never_appended_through_a_link(tmp_path, capsys):
    data = write_tiny_data(tmp_path / "d", n_train=24, n_test=6)
    cfg = write_config(tmp_path, data, name="k")
    run = tmp_path / "runs" / "k"  # a run killed during its setup, after argv.txt
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(RunConfig.from_yaml(cfg).to_yaml())
    victim = tmp_path / "victim.txt"
    victim.write_text("important\n")
    (run / ARGV).symlink_to(victim)
    assert main(["train", "-q", "--resume", str(run)]) == 2
    assert f"{run / ARGV} is a symbolic link" in _one_error_line(capsys)
    assert victim.read_text() == "important\n"
    (run / ARGV).unlink()
    RunDir(run).append_argv(["sidda", "a"])
    RunDir(run).append_argv(["sidda", "b"])
    assert (run / ARGV).read_text() == "sidda a\nsidda b\n"


def test_atomic_writes_replace_links_instead_of_writing_through_them(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / METRICS
    link.symlink_to(victim)
    atomic_write(link, "new")
    assert not link.is_symlink() and link.read_text() == "new" and victim.read_text() == "keep"
    planted = tmp_path / f".x.tmp{os.getpid()}"  # the temporary name this process would use
    planted.symlink_to(victim)
    atomic_write(tmp_path / "x", "data")
    assert (tmp_path / "x").read_text() == "data" and victim.read_text() == "keep"


def test_a_failed_evaluation_write_leaves_the_old_files_and_no_staging(tmp_path):
    """A write that fails part way (a full disk: ENOSPC after some bytes) removes the staging
    folder at once; the previous evaluation stays as it was."""
    import errno

    from sidda.runs import PREDICTION_FILES
    from sidda.runs.files import publish_files

    run = _synthetic_run(tmp_path / "r")
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}

    def disk_full(f):
        f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    files = {"logits_target.npy": b"new", "probs_target.npy": disk_full, METRICS: "{}"}
    with pytest.raises(OSError, match="No space left on device"):
        publish_files(run.path, files, last=METRICS, own_folder=False,
                      staging=".evaluation-staging", remove=PREDICTION_FILES)
    assert not (run.path / ".evaluation-staging").exists()
    assert {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()} == before
    assert run.state == RunState.EVALUATED


# ----------------------------------------------------------------------- evaluation folders

def test_each_data_folder_gets_its_own_evaluation_folder(tmp_path):
    run = RunDir(tmp_path / "r")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / INFO).write_text(json.dumps(RECORD.to_json() | {
        "data_path": str((tmp_path / "own").resolve())}))
    a, b = (tmp_path / p / "test" for p in ("A", "B"))
    assert run.eval_dir(None) == run and run.eval_dir(tmp_path / "own") == run
    assert run.eval_dir(a) != run.eval_dir(b)  # same folder name, other data
    assert run.eval_dir(a).path.parent == run.path / "eval"
    assert run.eval_dir(a).name.startswith("test-")
    assert run.eval_dir(tmp_path / "A" / ".." / "A" / "test") == run.eval_dir(a)
    assert run.eval_dir(tmp_path / "my data") != run.eval_dir(tmp_path / "my_data")


def test_evaluating_two_folders_of_one_name_keeps_both(trained, tmp_path):
    run = _copy(trained, tmp_path)
    data = RunConfig.from_yaml(run / "config.yaml").data.path
    folders = []
    for parent, n_test in (("A", 9), ("B", 12)):
        folders.append(write_tiny_data(tmp_path / parent / "test", n_test=n_test))
        shutil.copy(os.path.join(data, "manifest.json"), folders[-1])
    reports = [evaluate_run(run, data_path=f, calibration=False, selection=False)
               for f in folders]
    for folder, report, n in zip(folders, reports, (9, 12), strict=True):
        out = RunDir(run).eval_dir(folder)
        assert out.metrics() == report and report["data_path"] == str(folder.resolve())
        assert report["target"]["n"] == n and len(out.array("probs", "target")) == n
    assert RunDir(run).metrics()["data_path"] != reports[0]["data_path"]  # own results kept


# --------------------------------------------------------------------- the run's own records

def test_evaluation_keeps_the_target_the_run_was_trained_on(trained, tmp_path):
    """The data folder's manifest now names another target; the run's own data is still
    evaluated with the target suffix run.json recorded."""
    run = _copy(trained, tmp_path, data=True)
    data = tmp_path / "data"
    other = write_tiny_data(tmp_path / "other", n_train=30, n_test=12, seed=5)
    for split in ("train", "test"):
        for kind in ("x", "y"):
            shutil.copy(other / split / f"{kind}_{split}_noise.npy",
                        data / split / f"{kind}_{split}_alt.npy")
    _edit_json(data / "manifest.json", target_suffix="_alt")
    assert len(load_domains(DataConfig(path=str(data))).test_t) == 12  # the folder's target now
    assert RunDir(run).info().target_suffix == "_noise"
    for data_path in (None, data):
        report = evaluate_run(run, data_path=data_path, calibration=False, selection=False)
        assert report["target"]["n"] == 24  # the trained target, x_test_noise.npy
    assert report["target"]["accuracy"] == RunDir(trained).metrics()["target"]["accuracy"]


def _pngs(folder):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):  # 16 x 32: "stretch" and "crop" give other pixels
        img = (rng.random((16, 32)) * 255).astype(np.uint8)
        img[:, : 8 * (i + 1)] = 255
        Image.fromarray(img, "L").save(folder / f"{i}.png")
    return folder


def test_predict_reads_images_as_the_run_recorded_their_import(trained, tmp_path, caplog):
    run = _copy(trained, tmp_path, data=True)
    images = _pngs(tmp_path / "new")
    cfg = RunConfig.from_yaml(run / "config.yaml")
    stretched = load_images(images, in_channels=1, image_size=16, cfg=cfg, read_size=16,
                            fit="stretch")[1]
    cropped = load_images(images, in_channels=1, image_size=16, cfg=cfg, read_size=16,
                          fit="crop")[1]
    assert not torch.allclose(stretched, cropped)  # the setting matters for these images

    def probs(name):
        predict_run(run, images, tmp_path / name)
        return np.loadtxt(tmp_path / name, delimiter=",", skiprows=1, usecols=(3, 4, 5))

    first = probs("a.csv")
    (tmp_path / "data").rename(tmp_path / "moved")  # the data folder moved away
    np.testing.assert_array_equal(probs("b.csv"), first)
    (tmp_path / "moved").rename(tmp_path / "data")
    _edit_json(tmp_path / "data" / "manifest.json", fit="crop")  # imported again, otherwise
    caplog.clear()
    np.testing.assert_array_equal(probs("c.csv"), first)
    assert "predicting as the run was trained" in caplog.text
    with torch.no_grad():
        from sidda.experiments import TrainedRun

        net = TrainedRun.open(run).load("final").exported("target")
        expect = torch.softmax(net(stretched)[1], 1).numpy()
    np.testing.assert_allclose(first, expect, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ reuse by compare and sweep

def _compare_config(run):
    return RunConfig.from_yaml(run / "config.yaml")


def test_a_finished_run_is_reused_only_for_its_config_and_data(trained, tmp_path):
    run = _copy(trained, tmp_path, data=True)
    cfg = _compare_config(run)
    stamps = {f: (run / f).stat().st_mtime_ns for f in (METRICS, "checkpoints/final.pt")}
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["dist"]  # written before the section existed: its defaults apply
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    assert ensure_run(cfg) == RunDir(run).metrics()
    assert {f: (run / f).stat().st_mtime_ns for f in stamps} == stamps  # reused as it was
    x = np.load(tmp_path / "data" / "train" / "x_train.npy")
    np.save(tmp_path / "data" / "train" / "x_train.npy", x[::-1])  # regenerated data
    with pytest.raises(DataError, match=r"trained on data that changed since \(train/x_train"
                                        r".npy: SHA-256.*pass --force"):
        ensure_run(cfg)
    assert {f: (run / f).stat().st_mtime_ns for f in stamps} == stamps


def test_reused_runs_on_one_data_folder_hash_it_once(trained, tmp_path, monkeypatch):
    from sidda.experiments import data as run_data

    run = _copy(trained, tmp_path, data=True)
    twin = run.with_name("twin")
    shutil.copytree(run, twin)
    cfgs = [_compare_config(run), _compare_config(run).override(["name='twin'"])]
    (twin / "config.yaml").write_text(cfgs[1].to_yaml())
    calls = []
    real = run_data.data_checksums
    monkeypatch.setattr(run_data, "data_checksums", lambda cfg: calls.append(1) or real(cfg))
    checksums = run_data.DataChecksums()
    assert [ensure_run(c, checksums=checksums) for c in cfgs] == [
        RunDir(run).metrics(), RunDir(twin).metrics()]
    assert len(calls) == 1  # not once per reused run
    x = np.load(tmp_path / "data" / "train" / "x_train.npy")
    np.save(tmp_path / "data" / "train" / "x_train.npy", x[::-1])  # regenerated data
    with pytest.raises(DataError, match="trained on data that changed since"):
        ensure_run(cfgs[0], checksums=run_data.DataChecksums())


def test_a_reused_run_that_lost_a_file_is_evaluated_again_or_says_how_to_recover(trained,
                                                                                tmp_path):
    run = _copy(trained, tmp_path)
    cfg = _compare_config(run)
    final = (run / "checkpoints" / "final.pt").stat().st_mtime_ns
    _cut(run / METRICS, 25)  # damaged evaluation output: evaluated again
    assert ensure_run(cfg)["checkpoint"] == "final" and not RunDir(run).needs_evaluation()
    assert (run / "checkpoints" / "final.pt").stat().st_mtime_ns == final
    (run / "checkpoints" / "final.pt").unlink()
    (run / METRICS).unlink()
    with pytest.raises(InputError, match=r"final.pt: checkpoint not found.*; delete "
                                         rf"{re.escape(str(run))} to train that run again, or "
                                         "pass --force"):
        ensure_run(cfg)
    (run / "config.yaml").write_bytes(b"name: \xff\n")
    with pytest.raises(InputError, match=r"config.yaml: damaged \(.*\); delete .* --force"):
        ensure_run(cfg)


def test_an_old_robust_run_is_read_with_the_options_it_trained_with(tmp_path):
    """A robust run recorded before ``label_cost`` existed trained on latents alone: its
    config.yaml, read as the run's record, gets label_cost 0 (not today's default 0.5), so a
    comparison never takes it for a run of today's default, and a resume continues it as it
    was."""
    from sidda.config import RunConfig
    from sidda.experiments import run_config

    d = RunConfig().to_dict()
    del d["loss"]["label_cost"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(d))
    assert RunConfig.from_yaml(tmp_path / "config.yaml").loss.label_cost == 0.5  # a user's file
    assert run_config(tmp_path).loss.label_cost == 0.0  # the run's record
    dan = RunConfig.from_dict({"loss": {"method": "dan"}}).to_dict()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(dan))
    assert run_config(tmp_path).loss.method == "dan"  # an option dan does not have stays out
