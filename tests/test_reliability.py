"""Regression tests of the adversarial pass over the CLI (issue 11).

Each test names the finding it covers: T (traceback), S (silent wrong result), L (data lost),
R (hang or resource blow-up), U (unclear message), M (minor note). Property tests for each
class of input (npy headers, bounded options, device names, YAML bombs, run-folder states,
error messages) are at the end.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_config, write_tiny_data
from sidda import ConfigError, DataConfig, DataError, InputError, RunConfig, load_domains
from sidda.cli import main
from sidda.datasets import check_data
from sidda.errors import MAX_MESSAGE, one_line
from sidda.evaluate import MAX_BINS, check_bins
from sidda.models import MAX_GROUP_ORDER, parse_model_name
from sidda.report import ISOMAP_POINTS, check_isomap_points
from sidda.runs import (
    LOCK_NAME,
    PREDICTION_FILES,
    RunDir,
    load_checkpoint,
    lock_run,
    save_checkpoint,
)
from sidda.train.device import check_device

PROPS = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


def _config(tmp_path, data, name="r", **train):
    return write_config(tmp_path, data, name=name, model={"latent_dim": 16}, train=train)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error: "), err
    return err[0]


def _kill_when(args, path):
    """Run ``sidda ARGS`` in a process and SIGKILL it as soon as ``path`` exists (or it ended)."""
    proc = subprocess.Popen([sys.executable, "-m", "sidda", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not path.exists() and proc.poll() is None:
        assert time.monotonic() - t0 < 120
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("rel") / "data")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished, evaluated run; tests that change it work on a copy (:func:`_copy`)."""
    root = tmp_path_factory.mktemp("trained")
    assert main(["train", "-q", "--config", str(_config(root, data, "base"))]) == 0
    run = root / "runs" / "base"
    assert main(["evaluate", "-q", str(run)]) == 0
    return run


def _copy(run, tmp_path):
    dst = tmp_path / "runs" / run.name
    shutil.copytree(run, dst)
    return dst


def _write_header(path, shape, descr="<f4", payload=1000):
    """An .npy file whose header claims ``shape`` (the attacker's header of finding T1/T2)."""
    h = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    h = h + " " * (-(len(h) + 11) % 64) + "\n"  # magic + length + header: a multiple of 64
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode()
                     + b"\0" * payload)


# ------------------------------------------------------------------------------ tracebacks

@pytest.mark.parametrize("shape, finding", [("(-5, 24, 24, 1)", "T1"),
                                            (f"({10**22}, 24, 24, 1)", "T2")])
def test_T1_T2_crafted_npy_headers_are_data_errors(tmp_path, capsys, shape, finding):
    root = write_tiny_data(tmp_path / "d")
    _write_header(root / "train" / "x_train.npy", shape)
    with pytest.raises(DataError, match=r"x_train.npy: not a readable .npy array: its header"):
        load_domains(DataConfig(path=str(root)))
    assert main(["data", "check", str(root)]) == 2
    assert "x_train.npy" in _one_error_line(capsys)
    assert main(["train", "-q", "--config", str(_config(tmp_path, root))]) == 2
    assert "header" in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_T3_image_size_is_bounded(tmp_path, data, capsys):
    cfg = _config(tmp_path, data)
    assert main(["train", "-q", "--config", str(cfg), "--set", "data.image_size=100000"]) == 2
    assert "data.image_size must lie in 8..1024" in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_T3_images_above_the_bound_need_resizing(tmp_path):
    root = write_tiny_data(tmp_path / "d")
    np.save(root / "train" / "x_train.npy", np.zeros((48, 1030, 1030, 1), dtype=np.uint8))
    with pytest.raises(DataError, match=r"1030x1030 pixels are larger .* set data.image_size"):
        load_domains(DataConfig(path=str(root)), splits=("train",))


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU ", "", "cpu;rm"])
def test_T4_unknown_train_device_exits_2(tmp_path, data, capsys, device):
    cfg = _config(tmp_path, data)
    assert main(["train", "-q", "--config", str(cfg), "--set", f"train.device={device!r}"]) == 2
    assert "device" in _one_error_line(capsys)
    assert main(["train", "-q", "--config", str(cfg), "--device", device]) == 2
    assert "device" in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_T5_T6_evaluate_checks_the_device(trained, capsys):
    before = (trained / "metrics.json").read_bytes()
    assert main(["evaluate", str(trained), "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in _one_error_line(capsys)
    if not torch.cuda.is_available():
        assert main(["evaluate", str(trained), "--device", "cuda"]) == 2
        assert "CUDA is not available" in _one_error_line(capsys)
    assert (trained / "metrics.json").read_bytes() == before


# ------------------------------------------------------------------ concurrent runs (S1, L1)

def test_S1_a_locked_run_is_refused_and_left_alone(tmp_path, data, capsys):
    cfg = _config(tmp_path, data, "race")
    run = tmp_path / "runs" / "race"
    with lock_run(run, what="train"):
        assert main(["train", "-q", "--config", str(cfg)]) == 2
        msg = _one_error_line(capsys)
        assert "in use by another sidda process" in msg and f"pid {os.getpid()}" in msg
        assert main(["train", "-q", "--config", str(cfg), "--force"]) == 2
        assert "in use" in _one_error_line(capsys)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    assert main(["train", "-q", "--config", str(cfg)]) == 0  # the lock went with its holder
    capsys.readouterr()  # its start-of-training warnings, if any
    with lock_run(run, what="evaluate"):
        assert main(["evaluate", "-q", str(run)]) == 2
        assert "in use" in _one_error_line(capsys)
        assert main(["train", "-q", "--resume", str(run)]) == 0  # finished: nothing to write
    assert not (run / "metrics.json").exists()


def test_S1_two_trainings_into_one_name_never_both_succeed(tmp_path, data):
    procs = []
    for seed in (1, 2):
        cfg = _config(tmp_path, data, "race", seed=seed)
        cfg = cfg.rename(tmp_path / f"race{seed}.yaml")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sidda", "train", "-q", "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    assert "in use by another sidda process" in loser[2] or "already exists" in loser[2]
    winner_seed = 1 + [r[0] for r in results].index(0)
    run = tmp_path / "runs" / "race"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == winner_seed
    assert (run / "checkpoints" / "final.pt").is_file()


def test_S1_locking_never_makes_a_folder_for_a_non_run(tmp_path, data, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in _one_error_line(capsys)
    assert main(["evaluate", str(data)]) == 2
    assert not (tmp_path / "nope").exists() and not (data / LOCK_NAME).exists()


def test_S1_force_rechecks_under_the_lock_and_keeps_the_lock_file(tmp_path, data):
    cfg = _config(tmp_path, data, "again")
    run = tmp_path / "runs" / "again"
    assert main(["train", "-q", "--config", str(cfg)]) == 0
    inode = (run / LOCK_NAME).stat().st_ino
    (run / "precious.txt").write_text("old run")
    assert main(["train", "-q", "--config", str(cfg), "--force"]) == 0
    assert not (run / "precious.txt").exists()
    assert (run / LOCK_NAME).stat().st_ino == inode  # cleared around the held lock


# ------------------------------------------------------------------------ checkpoints (S2)

def test_S2_a_damaged_last_pt_is_refused(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    last = run / "checkpoints" / "last.pt"
    raw = bytearray(last.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    last.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="damaged checkpoint"):
        load_checkpoint(last)
    assert main(["train", "--resume", str(run)]) == 2
    assert "last.pt: damaged checkpoint" in _one_error_line(capsys)


@PROPS
@given(data=st.data())
def test_S2_any_flipped_byte_is_detected(tmp_path, data):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(50.0)}, "epoch": 3})
    raw = bytearray(path.read_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError):
        load_checkpoint(path)


def test_S2_checkpoints_without_a_checksum_still_load(tmp_path, caplog):
    path = tmp_path / "old.pt"
    torch.save({"model": {}, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert "no checksum" in caplog.text
    caplog.clear()
    path.write_bytes(b"")  # damaged: an error, and no word about an older sidda
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert "no checksum" not in caplog.text


# -------------------------------------------------------------------- evaluation (S3 S4 L2)

def _consistent(folder):
    """metrics.json describes exactly the arrays beside it (rows = test images)."""
    m = json.loads((folder / "metrics.json").read_text())
    for dom in ("source", "target"):
        n = int(np.load(folder / f"probs_{dom}.npy").shape[0])
        labels = folder / f"labels_{dom}.npy"
        assert labels.is_file() == bool(m[dom].get("labelled", True)), dom
        if labels.is_file():
            assert np.load(labels).shape == (n,)
            assert int(np.array(m[dom]["confusion_matrix"]).sum()) == n
    return m


def test_S3_L2_other_data_is_evaluated_beside_the_run(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    own = {f: (run / f).read_bytes() for f in ("metrics.json", *PREDICTION_FILES)
           if (run / f).is_file()}
    assert "labels_target.npy" in own
    other = tmp_path / "unlabelled"
    shutil.copytree(json.loads((run / "run.json").read_text())["data_path"], other)
    for split in ("train", "test"):
        (other / split / f"y_{split}_noise.npy").unlink()
    assert main(["evaluate", "-q", str(run), "--data", str(other)]) == 0
    out = RunDir(run).eval_dir(other).path  # eval/unlabelled-<hash of the folder's path>
    assert out.parent == run / "eval" and out.name.startswith("unlabelled-")
    assert f"wrote {out / 'metrics.json'}" in capsys.readouterr().out
    assert {f: (run / f).read_bytes() for f in own} == own  # the run's own results are kept
    m = _consistent(out)
    assert not (out / "labels_target.npy").exists() and m["target"]["labelled"] is False
    assert m["data_path"] == str(other.resolve())
    # the run's own data again, now unlabelled there too: the stale labels file goes
    data_dir = json.loads((run / "run.json").read_text())["data_path"]
    own_copy = tmp_path / "own"
    shutil.copytree(data_dir, own_copy)
    for split in ("train", "test"):
        (own_copy / split / f"y_{split}_noise.npy").unlink()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["path"] = str(own_copy)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "-q", str(run)]) == 0
    assert not (run / "labels_target.npy").exists()
    _consistent(run)


def test_S4_a_killed_evaluation_never_leaves_a_mixed_state(trained, tmp_path):
    run = _copy(trained, tmp_path)
    old = json.loads((run / "metrics.json").read_text())
    _kill_when(["evaluate", "-q", str(run), "--bins", "7"], run / ".evaluation-staging")
    if (run / "metrics.json").is_file():  # the old evaluation, or the new one: whole either way
        m = _consistent(run)
        assert m["n_bins"] in (old["n_bins"], 7)
    else:
        assert RunDir(run).needs_evaluation()
    assert main(["evaluate", "-q", str(run), "--bins", "7"]) == 0
    assert _consistent(run)["n_bins"] == 7
    assert not (run / ".evaluation-staging").exists()


# -------------------------------------------------------------------- resources (R1 R2 R3)

def test_R1_bins_are_bounded(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    assert main(["evaluate", str(run), "--bins", "100000000"]) == 2
    assert f"1..{MAX_BINS}" in _one_error_line(capsys)
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--bins", "0"]) == 2
    assert "--bins" in _one_error_line(capsys)
    m = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(m | {"n_bins": 100_000_000}))  # older sidda
    assert RunDir(run).needs_evaluation()


def test_R2_group_order_is_bounded(tmp_path, data, capsys):
    t0 = time.monotonic()
    cfg = _config(tmp_path, data)
    assert main(["train", "-q", "--config", str(cfg), "--set", "model.name=d1000"]) == 2
    assert f"1 <= N <= {MAX_GROUP_ORDER}" in _one_error_line(capsys)
    assert time.monotonic() - t0 < 30
    assert parse_model_name(f"d{MAX_GROUP_ORDER}") == ("d", MAX_GROUP_ORDER)


def _bomb(levels, width=9):
    """A YAML flow list holding a "billion laughs": level i is ``width`` aliases of level i-1."""
    items = ["&a0 [1]"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]"
                           for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


def test_R3_a_yaml_bomb_in_a_valid_key_gives_a_short_message(tmp_path, capsys):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(f"train:\n  milestones: {_bomb(8)}\n")  # 9**8 leaves when expanded
    t0 = time.monotonic()
    assert main(["train", "--config", str(cfg)]) == 2
    line = _one_error_line(capsys)
    assert "train.milestones" in line and len(line) < 600
    assert time.monotonic() - t0 < 20


# ---------------------------------------------------------------------- messages (U, M)

def test_U_non_finite_validation_is_divergence_exit_1(tmp_path, capsys):
    root = write_tiny_data(tmp_path / "d")
    x = np.load(root / "train" / "x_train.npy")
    np.save(root / "train" / "x_train.npy", (x * 1e30).astype(np.float32))
    assert main(["train", "-q", "--config", str(_config(tmp_path, root))]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # start-of-training warnings, then it
    line = err[-1]
    assert line.startswith("sidda: error: ") and sum(e.startswith("sidda:") for e in err) == 1
    assert "non-finite" in line or "NaN or inf" in line
    assert "arange" not in line


def test_U_internal_value_errors_are_not_input_errors(tmp_path, data, capsys, monkeypatch):
    import sidda.experiments

    def broken(*a, **k):
        np.arange(0, np.inf)  # numpy's own ValueError, as deep inside a computation

    monkeypatch.setattr(sidda.experiments, "train_run", broken)
    assert main(["train", "-q", "--config", str(_config(tmp_path, data))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: internal error") and "ValueError" in err[0]


@pytest.mark.parametrize("args, says", [
    (["data", "make", "shapes", "--out", "{t}/m", "--image-size", "100000"],
     "image_size must be an integer <= 1024"),
    (["data", "make", "astro", "--out", "{t}/m", "--n-per-class", "0"], "--n-per-class"),
    (["data", "show", "{data}", "--out", "{t}/g.png", "--per-class", "0"], "--per-class"),
    (["data", "import-folder", "{t}", "{t}", "--out", "{t}/o", "--test-fraction", "2"],
     "test_fraction"),
    (["data", "import-folder", "{t}", "{t}", "--out", "{t}/o", "--image-size", "5000"],
     "--image-size must lie in 8..1024"),
])
def test_U_sidda_own_input_errors_stay_exit_2(tmp_path, data, capsys, args, says):
    args = [a.format(t=tmp_path, data=data) for a in args]
    assert main(args) == 2
    assert says in _one_error_line(capsys)


def _requeue(tmp_path, cfg, run):
    """The job script of docs/recovery.md."""
    if (run / "config.yaml").is_file():
        return main(["train", "-q", "--resume", str(run)])
    return main(["train", "-q", "--config", str(cfg)])


#: What a run folder holds when a kill hits its setup, in the order train writes it.
SETUP_STATES = [[], [LOCK_NAME], [LOCK_NAME, "config.yaml"],
                [LOCK_NAME, "config.yaml", "argv.txt"],
                [LOCK_NAME, "config.yaml", "argv.txt", "environment.json"],
                [LOCK_NAME, "config.yaml", "argv.txt", "environment.json",
                 "data_manifest.json"]]


@pytest.mark.parametrize("files", SETUP_STATES, ids=lambda f: f"{len(f)}-files")
def test_U_requeue_script_works_at_every_setup_kill_point(tmp_path, data, files, trained):
    cfg = _config(tmp_path, data, "k")
    run = tmp_path / "runs" / "k"
    if files:
        run.mkdir(parents=True)
        for f in files:
            src = trained / f
            if f == "config.yaml":
                (run / f).write_text(RunConfig.from_yaml(cfg).to_yaml())
            elif src.is_file():
                shutil.copy(src, run / f)
            else:
                (run / f).write_text("")
    assert _requeue(tmp_path, cfg, run) == 0
    assert (run / "checkpoints" / "final.pt").is_file() and (run / "run.json").is_file()


def test_U_requeue_after_a_real_kill_during_setup(tmp_path, data):
    cfg = _config(tmp_path, data, "k0")
    run = tmp_path / "runs" / "k0"
    _kill_when(["train", "-q", "--config", str(cfg)], run / "config.yaml")
    assert _requeue(tmp_path, cfg, run) == 0
    assert (run / "checkpoints" / "final.pt").is_file()


@pytest.mark.parametrize("key", ["name", "data.path"])
def test_U_non_utf8_names_are_refused_before_any_write(tmp_path, data, capsys, key):
    cfg = _config(tmp_path, data)
    value = "r\udcff\udcfeun" if key == "name" else str(data) + "\udcff"
    assert main(["train", "-q", "--config", str(cfg), "--set", f"{key}={value!r}"]) == 2
    assert "not valid UTF-8" in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_M_a_too_long_name_is_input(tmp_path, data, capsys):
    assert main(["train", "-q", "--config", str(_config(tmp_path, data)),
                 "--set", "name=" + "a" * 300]) == 2
    assert "300 bytes long" in _one_error_line(capsys)


@pytest.mark.parametrize("argv, says", [
    (["data", "make", "shapes", "--out", "{f}", "--n-per-class", "2"], "--out {f} is a file"),
    (["data", "make", "shapes", "--out", "{f}/sub", "--n-per-class", "2"],
     "--out {f}/sub: {f} is a file, not a folder"),
    (["train", "--config", "{cfg}", "--set", "out_dir={f}"],
     "a part of that path is a file where a folder is needed"),
])
def test_a_file_where_a_folder_is_needed_is_bad_input(tmp_path, data, capsys, argv, says):
    f = tmp_path / "notes.txt"
    f.write_text("keep")
    cfg = _config(tmp_path, data)
    fill = {"f": str(f), "cfg": str(cfg)}
    assert main([a.format(**fill) for a in argv]) == 2
    assert says.format(**fill) in _one_error_line(capsys)
    assert f.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "r.yaml"]


def _special(kind, path):
    if kind == "dir_as_file":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    elif kind == "symlink_loop":
        path.symlink_to(path.name)
    elif kind == "dangling_symlink":
        path.symlink_to("nowhere.npy")


@pytest.mark.parametrize("kind, says", [
    ("dir_as_file", "is a folder"), ("fifo", "is a FIFO"), ("devzero", "character device"),
    ("symlink_loop", "symbolic link loop"), ("dangling_symlink", "broken symbolic link"),
])
def test_U_not_found_says_what_is_there(tmp_path, capsys, kind, says):
    root = write_tiny_data(tmp_path / "d")
    target = root / "train" / "x_train.npy"
    target.unlink()
    _special(kind, target)
    assert main(["data", "check", str(root)]) == 2
    line = _one_error_line(capsys)
    assert f"x_train.npy: {says}" in line or says in line
    assert "file not found" not in line


@pytest.mark.parametrize("shape, image_size, says", [
    ((9, 4, 4, 1), None, "4x4 pixels (1 channel(s))"),
    ((9, 4, 4, 3), 24, "4x4 pixels (3 channel(s))"),
])
def test_U_too_small_images_are_described_as_they_are(tmp_path, capsys, shape, image_size,
                                                       says):
    root = write_tiny_data(tmp_path / "d")
    np.save(root / "train" / "x_train.npy", np.zeros(shape, dtype=np.float32))
    args = ["data", "check", str(root)] + (["--image-size", str(image_size)] if image_size
                                            else [])
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert says in line
    assert ("make them larger" in line) == (image_size is not None)


def _drop_class_names(root):
    """The tiny set's manifest names 3 classes; a test that makes more drops the names."""
    man = json.loads((root / "manifest.json").read_text())
    del man["class_names"]
    (root / "manifest.json").write_text(json.dumps(man))


def test_U_check_and_train_agree_on_the_classes(tmp_path, capsys):
    root = write_tiny_data(tmp_path / "d")
    _drop_class_names(root)
    y = np.load(root / "test" / "y_test.npy")
    y[0] = 3  # a class that only the test split holds
    np.save(root / "test" / "y_test.npy", y)
    assert check_data(DataConfig(path=str(root))).num_classes == 4
    assert load_domains(DataConfig(path=str(root)), splits=("train",)).num_classes == 4
    cfg = _config(tmp_path, root)
    assert main(["train", "-q", "--config", str(cfg), "--evaluate"]) == 0
    run = tmp_path / "runs" / "r"
    assert json.loads((run / "run.json").read_text())["num_classes"] == 4
    assert json.loads((run / "metrics.json").read_text())["source"]["accuracy"] >= 0


def test_M_a_stray_label_is_an_error_unless_num_classes_says_so(tmp_path, capsys):
    root = write_tiny_data(tmp_path / "d")
    _drop_class_names(root)
    y = np.load(root / "train" / "y_train.npy")
    y[5] = 7
    np.save(root / "train" / "y_train.npy", y)
    with pytest.raises(DataError, match=r"y_train.npy: label 7 .* class\(es\) \[3, 4, 5, 6\].*"
                                        r"data.num_classes: 8"):
        load_domains(DataConfig(path=str(root)))
    assert main(["data", "check", str(root)]) == 2
    assert "stray" in _one_error_line(capsys)
    assert load_domains(DataConfig(path=str(root), num_classes=8)).num_classes == 8


def test_U_report_isomap_points_are_bounded(trained, tmp_path, capsys):
    assert main(["report", str(trained), "--out", str(tmp_path / "r.html"),
                 "--isomap-points", "0"]) == 2
    assert "--isomap-points must be an integer in 10..5000" in _one_error_line(capsys)


def test_M_duplicate_yaml_keys_are_refused(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("name: a\nname: b\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'name' at line 2"):
        RunConfig.from_yaml(p)


def test_M_huge_epochs_are_refused(tmp_path, data, capsys):
    assert main(["train", "-q", "--config", str(_config(tmp_path, data)),
                 "--set", "train.epochs=9999999999999999999999"]) == 2
    assert "train.epochs must lie in 1..100000" in _one_error_line(capsys)


def test_M_data_make_removes_staging_left_by_a_kill(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".D.staging-{dead.pid}-abc123"
    (stale / "d" / "train").mkdir(parents=True)
    alive = tmp_path / f".E.staging-{os.getpid()}-xyz"
    alive.mkdir()
    assert main(["data", "make", "shapes", "--out", str(tmp_path / "D"), "--n-per-class", "3",
                 "--image-size", "24", "-q"]) == 0
    assert not stale.exists() and alive.exists()  # a running make keeps its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "D"]


# ------------------------------------------------------------------------ property tests

@PROPS
@given(shape=st.lists(st.integers(-(10**25), 10**25), min_size=0, max_size=5),
       descr=st.sampled_from(["<f4", "|u1", ">f8", "<i2", "<c8"]))
def test_fuzz_npy_headers_give_data_errors_only(tmp_path, shape, descr):
    root = tmp_path / "h"
    if root.exists():
        shutil.rmtree(root)
    write_tiny_data(root, n_train=12, n_test=6, size=8)
    _write_header(root / "train" / "x_train.npy", tuple(shape), descr, payload=600)
    try:
        load_domains(DataConfig(path=str(root)))
    except DataError as e:
        assert "x_train.npy" in str(e) and len(str(e)) < 1000
    else:  # only a header that the bytes really fill can load
        assert all(d >= 0 for d in shape)


@PROPS
@given(key=st.sampled_from(["data.image_size", "train.epochs", "model.name"]),
       n=st.integers(-5, 10**30))
def test_fuzz_bounded_config_integers(key, n):
    value = f"d{n}" if key == "model.name" else n
    lo, hi = {"data.image_size": (8, 1024), "train.epochs": (1, 100_000),
              "model.name": (1, MAX_GROUP_ORDER)}[key]
    try:
        RunConfig(name="x").override([f"{key}={value!r}", "train.warmup=0"])
    except ConfigError as e:
        assert not lo <= n <= hi and len(str(e)) < 400
    else:
        assert lo <= n <= hi


@PROPS
@given(bins=st.one_of(st.integers(-10, 10**12), st.floats(), st.booleans(), st.text(max_size=5)),
       points=st.one_of(st.integers(-10, 10**9), st.none()))
def test_fuzz_bins_and_isomap_points(bins, points):
    ok = isinstance(bins, int) and not isinstance(bins, bool) and 1 <= bins <= MAX_BINS
    try:
        assert check_bins(bins) == bins and ok
    except InputError:
        assert not ok
    lo, hi = ISOMAP_POINTS
    ok = isinstance(points, int) and lo <= points <= hi
    try:
        assert check_isomap_points(points) == points and ok
    except InputError:
        assert not ok


@PROPS
@given(name=st.one_of(st.text(max_size=12), st.sampled_from(
    ["cpu", "cuda", "cuda:0", "cuda:99", "auto", "tpu", "mps", "xla", "cuda:-1", "meta"])))
def test_fuzz_device_names(name):
    try:
        dev = check_device(name)
    except InputError as e:
        assert "device" in str(e) and len(str(e)) < 400
    else:
        assert dev.type in ("cpu", "cuda")
        assert name in ("cpu", "auto") or name.startswith("cuda")


@settings(max_examples=12, deadline=None)
@given(levels=st.integers(1, 9), width=st.integers(2, 10),
       key=st.sampled_from(["milestones", "epochs", "device", "bogus"]))
def test_fuzz_yaml_bombs_are_cheap_and_short(tmp_path_factory, levels, width, key):
    p = tmp_path_factory.mktemp("bomb") / "c.yaml"
    p.write_text(f"train:\n  {key}: {_bomb(levels, width)}\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(p)
    assert len(str(info.value)) < 600 and time.monotonic() - t0 < 5


@PROPS
@given(text=st.text(max_size=50), repeat=st.integers(0, 200_000))
def test_fuzz_error_lines_are_bounded(text, repeat):
    line = one_line(ValueError(text * repeat + "\n end"))
    assert "\n" not in line and len(line) <= MAX_MESSAGE and line
