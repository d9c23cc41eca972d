"""Runs that survive interruption and numerical failure: kill and resume, SIGTERM and SIGINT,
determinism, non-finite steps, failed writes (docs/recovery.md)."""

import csv
import json
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from conftest import write_config, write_old_last
from sidda import DataConfig, LossConfig, RunConfig, TrainConfig, build_model, fit, load_domains
from sidda.cli import main
from sidda.experiments import train_run
from sidda.runs import atomic_write, load_checkpoint
from sidda.train.recovery import NonFiniteError, TrainingInterrupted, read_state, resume_path

# 39 training images after the validation split: 3 steps per epoch, 12 in all.
TRAIN = {"epochs": 4, "warmup": 1, "batch_size": 16, "seed": 3, "threads": 1,
         "checkpoint_every": 1, "keep_epoch_checkpoints": True}
EPOCH_CHECKPOINTS = tuple(f"epoch_{e:04d}" for e in range(1, TRAIN["epochs"] + 1))


def _config(root, data, name, loss=None, **train):
    return write_config(root, data, name=name, train=TRAIN | train,
                        **({"loss": loss} if loss else {}))


def _rows(path):
    """CSV rows without the wall-clock column."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def assert_same_run(a, b):
    """Bit-identical checkpoints (every epoch's too) and identical histories (timings aside),
    numbered 1..E without a gap or a repeat."""
    for name in ("final", "best_val_acc", "best_val_loss", *EPOCH_CHECKPOINTS):
        ca, cb = (load_checkpoint(r / "checkpoints" / f"{name}.pt") for r in (a, b))
        assert ca["epoch"] == cb["epoch"], name
        for part in ("model", "loss"):
            assert ca[part].keys() == cb[part].keys()
            for k in ca[part]:
                assert torch.equal(ca[part][k], cb[part][k]), f"{name}.pt {part}.{k} differs"
    for f in ("history.csv", "history_steps.csv"):
        assert _rows(a / f) == _rows(b / f), f
    epochs = list(range(1, TRAIN["epochs"] + 1))
    assert [int(r["epoch"]) for r in _rows(a / "history.csv")] == epochs
    steps = _rows(a / "history_steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(len(steps)))
    assert sorted({int(r["epoch"]) for r in steps}) == epochs
    assert not list(a.rglob(".*.tmp*")), "a temporary file was left behind"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import write_tiny_data

    return write_tiny_data(tmp_path_factory.mktemp("resume") / "data")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    assert main(["train", "--config", str(_config(root, data, "ref")), "-q"]) == 0
    return root / "runs" / "ref"


def _start(cfg, log):
    return subprocess.Popen(
        [sys.executable, "-m", "sidda", "train", "--config", str(cfg), "-q"],
        stdout=subprocess.DEVNULL, stderr=log,
    )


def _at(run, epoch, step):
    """Ready once last.pt has reached (epoch, step)."""
    def ready():
        try:
            state = read_state(run)
        except (ValueError, OSError):  # pragma: no cover - atomic writes make this unreachable
            return False
        return state is not None and (state.epoch, state.step) >= (epoch, step)
    return ready


KILL_POINTS = {
    "before-any-checkpoint": lambda run: (run / "environment.json").is_file(),
    "mid-epoch": lambda run: _at(run, 1, 1)(),
    "after-epoch-boundary": lambda run: _at(run, 2, 0)(),
}


def _wait_then(proc, ready, sig, timeout=180):
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before the signal"
        assert time.monotonic() - t0 < timeout, "the run never reached the kill point"
        time.sleep(0.005)
    proc.send_signal(sig)
    return proc.wait(timeout=timeout)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_resume_is_bit_identical(data, reference, tmp_path, point):
    cfg = _config(tmp_path, data, "killed")
    run = tmp_path / "runs" / "killed"
    with open(tmp_path / "stderr.txt", "w") as log:
        proc = _start(cfg, log)
        assert _wait_then(proc, lambda: KILL_POINTS[point](run), signal.SIGKILL) == -9
    assert not (run / "checkpoints" / "final.pt").exists()
    state = read_state(run)  # None: killed before the first checkpoint
    assert state is None or not state.finished
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_run(run, reference)
    argv = (run / "argv.txt").read_text().splitlines()
    assert len(argv) == 2 and "--resume" in argv[1]


def test_sigterm_checkpoints_exits_143_and_resumes(data, reference, tmp_path):
    cfg = _config(tmp_path, data, "term")
    run = tmp_path / "runs" / "term"
    with open(tmp_path / "stderr.txt", "w") as log:
        proc = _start(cfg, log)
        assert _wait_then(proc, _at(run, 0, 2), signal.SIGTERM) == 143
    err = (tmp_path / "stderr.txt").read_text()
    assert "interrupted by SIGTERM" in err and f"resume with: sidda train --resume {run}" in err
    state = read_state(run)
    assert state is not None and not state.finished and (state.epoch, state.step) >= (0, 2)
    assert not (run / "checkpoints" / "final.pt").exists()
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_run(run, reference)


def test_sigint_mid_epoch_then_resume_checks_the_data(data, reference, tmp_path, capsys):
    own = tmp_path / "data"
    shutil.copytree(data, own)
    cfg = RunConfig.from_yaml(_config(tmp_path, own, "int", checkpoint_every=None))
    before = signal.getsignal(signal.SIGINT)

    def interrupt(event, rec):
        if event == "step" and rec["step"] == 4:  # mid-way through the second epoch
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as info:
        train_run(cfg, callbacks=[interrupt])
    assert info.value.exit_status == 130 and (info.value.epoch, info.value.step) == (2, 2)
    assert signal.getsignal(signal.SIGINT) is before  # handlers are restored
    run = cfg.run_dir
    assert read_state(run).step == 2
    # Resuming on changed training data is refused; the original data resumes exactly.
    y = own / "train" / "y_train.npy"
    original = y.read_bytes()
    np.save(y, np.load(y)[::-1].copy())
    assert main(["train", "--resume", str(run)]) == 2
    assert "changed since the run started" in capsys.readouterr().err
    y.write_bytes(original)
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_run(run, reference)
    # A finished run resumes to itself; without --resume an existing run is never replaced.
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_run(run, reference)
    assert main(["train", "--config", str(tmp_path / "int.yaml")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_same_config_and_seed_give_identical_runs(data, reference, tmp_path):
    assert main(["train", "--config", str(_config(tmp_path, data, "again")), "-q"]) == 0
    run = tmp_path / "runs" / "again"
    assert_same_run(run, reference)
    env = json.loads((run / "environment.json").read_text())
    assert env["seed"] == TRAIN["seed"] and env["torch"] == torch.__version__
    assert set(env["data_files"]) == {"train/x_train.npy", "train/y_train.npy",
                                      "train/x_train_noise.npy", "train/y_train_noise.npy"}
    assert all(len(f["sha256"]) == 64 for f in env["data_files"].values())
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == TRAIN["seed"]


def _interrupt_at(step):
    """A callback that sends this process SIGINT after global step ``step``."""
    def interrupt(event, rec):
        if event == "step" and rec["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)
    return interrupt


def test_an_upgraded_old_last_pt_resumes_bit_identically(data, reference, tmp_path, capsys):
    """A last.pt in the format of an older sidda (its NumPy random state an array) is refused
    by --resume; once `sidda runs upgrade --trust` converted it, the run resumes exactly."""
    cfg = RunConfig.from_yaml(_config(tmp_path, data, "old", checkpoint_every=None))
    with pytest.raises(TrainingInterrupted):
        train_run(cfg, callbacks=[_interrupt_at(4)])
    run = cfg.run_dir
    write_old_last(resume_path(run))
    assert main(["train", "--resume", str(run)]) == 2
    assert f"sidda runs upgrade {run} --trust" in capsys.readouterr().err
    assert main(["runs", "upgrade", str(run), "--trust"]) == 0
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_run(run, reference)


# ------------------------------------------------------------- another thread count

#: Robust SIDDA with a stationary window of two of the 9 alignment steps. At the first one the
#: etas sit where their exact gradient is zero, so the step AdamW takes from there follows the
#: sign of rounding noise; the second step sets them again. (The conv biases before BatchNorm
#: have a zero gradient as well, so the weights are not compared across thread counts: the
#: values of the training steps, which BatchNorm makes independent of those biases, are.)
WINDOW = {"stationary_window": 0.2}
STEP_VALUES = ("ce", "da", "total", "blur", "max_distance", "grad_norm", "eta_1", "eta_2")


def _threads_run(root, data, name, threads, callbacks=()):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train_run(RunConfig.from_yaml(_config(root, data, name, loss=WINDOW, threads=None)),
                  callbacks=callbacks)
    finally:
        torch.set_num_threads(previous)
    return root / "runs" / name


def _gap(a, b):
    """The largest relative difference between two runs' logged step values (the etas logged
    right after their zero-gradient step aside)."""
    rows_a, rows_b = _rows(a / "history_steps.csv"), _rows(b / "history_steps.csv")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    first = next(i for i, r in enumerate(rows_b) if r["phase"] != "warmup")
    gap = 0.0
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=True)):
        for key in STEP_VALUES:
            assert (ra[key] == "") == (rb[key] == ""), (i, key)
            if rb[key] == "" or (i == first and key.startswith("eta")):
                continue
            x, y = float(ra[key]), float(rb[key])
            gap = max(gap, abs(x - y) / max(abs(y), 1e-6))
    return gap


@pytest.fixture(scope="module")
def thread_references(data, tmp_path_factory):
    """The uninterrupted run with 1 and with 2 torch threads: two reduction orders, as two
    CPUs may have."""
    root = tmp_path_factory.mktemp("threads")
    return {t: _threads_run(root, data, f"ref{t}", t) for t in (1, 2)}


def test_a_resume_with_another_thread_count_stays_within_rounding(data, thread_references,
                                                                  tmp_path):
    """Stopped at 1 thread and resumed at 2 (train.threads: null, so the process's count
    applies), the run logs the values of the uninterrupted run, with 1 thread or with 2, to
    within ten times the difference between those two (the rounding noise of the thread
    count, measured here). A random state restored wrongly (another dropout mask) would
    change the cross-entropy by orders of magnitude more."""
    with pytest.raises(TrainingInterrupted):
        _threads_run(tmp_path, data, "cut", 1, callbacks=[_interrupt_at(4)])
    run = tmp_path / "runs" / "cut"
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "--resume", str(run), "-q"]) == 0
    finally:
        torch.set_num_threads(previous)
    noise = _gap(thread_references[1], thread_references[2])
    assert noise < 1e-3  # the reduction order changes the values by rounding, not more
    for threads, ref in thread_references.items():
        assert _gap(run, ref) <= 10 * noise + 1e-6, threads


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------- non-finite


class Flaky(nn.Module):
    """The real CNN, made non-finite at chosen training forward passes (1-based).

    ``bad`` maps a call to what goes wrong: ``latents`` (inf latents), ``logits`` (inf
    logits, so CE is not finite) or ``grad`` (finite loss, inf gradient).
    """

    def __init__(self, bad):
        super().__init__()
        torch.manual_seed(0)
        self.net = build_model("cnn", in_channels=1, num_classes=3, image_size=16)
        self.bad, self.calls = bad, 0

    def forward(self, x):
        z, logits = self.net(x)
        if self.training:
            self.calls += 1
            kind = self.bad.get(self.calls)
            if kind == "latents":
                z = z * math.inf
            elif kind == "logits":
                logits = logits + math.inf
            elif kind == "grad":
                logits.register_hook(lambda g: g * math.inf)
        return z, logits


@pytest.fixture
def sets(tiny_data):
    return load_domains(DataConfig(path=str(tiny_data)))  # 48 training images: 3 steps


def _all_finite(run):
    for path in (run / "checkpoints").glob("*.pt"):
        ckpt = load_checkpoint(path)
        for part in ("model", "loss"):
            for k, t in (ckpt.get(part) or {}).items():
                assert torch.isfinite(t).all(), f"{path.name}: {part}.{k}"


# Training forward passes per step: one in the warm-up and under the paper variant (source and
# target together), two under the robust variant (source, then target).
@pytest.mark.parametrize("variant, bad", [
    ("paper", {2: "logits", 5: "latents", 7: "grad"}),  # steps 1 (warm-up), 4 and 6
    ("robust", {2: "logits", 7: "latents", 10: "grad"}),  # step 4's target, step 6's source pass
])
def test_non_finite_steps_are_skipped_and_training_goes_on(sets, tmp_path, caplog, variant,
                                                           bad):
    model = Flaky(bad)
    cfg = TrainConfig(epochs=3, warmup=1, batch_size=16, max_bad_steps=2, threads=1)
    with caplog.at_level(logging.WARNING, logger="sidda"):
        hist = fit(model, sets.train_s, sets.train_t, cfg, loss=LossConfig(variant=variant),
                   val_s=sets.test_s, val_t=sets.test_t, run_dir=tmp_path)
    skipped = {s["step"]: s["skipped"] for s in hist.steps if s["skipped"]}
    assert skipped == {1: "CE, total", 4: "latents", 6: "gradient"}
    warned = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert len(warned) == 3 and "non-finite latents" in warned[1] and "blur" in warned[1]
    assert [e["skipped_steps"] for e in hist.epochs] == [1, 1, 1]
    assert all(math.isfinite(e["train_total"]) for e in hist.epochs)
    # the optimizer stepped on the 6 good steps only; nothing non-finite was saved
    last = load_checkpoint(resume_path(tmp_path))
    assert int(last["optimizer"]["state"][0]["step"]) == 6
    _all_finite(tmp_path)
    with open(tmp_path / "history_steps.csv") as f:
        assert [r["skipped"] for r in csv.DictReader(f)].count("") == 6


@pytest.mark.parametrize("variant, first", [("paper", 5), ("robust", 6)])
def test_consecutive_non_finite_steps_stop_with_a_clear_error(sets, tmp_path, variant, first):
    model = Flaky({c: "latents" for c in range(first, 100)})  # from step 4 (epoch 2) on
    cfg = TrainConfig(epochs=4, warmup=1, batch_size=16, max_bad_steps=3, threads=1)
    with pytest.raises(NonFiniteError, match=r"3 steps in a row had non-finite latents.*"
                       r"blowing up.*learning rate.*train\.lr.*train\.grad_clip.*"
                       r"loss\.blur_floor"):
        fit(model, sets.train_s, sets.train_t, cfg, loss=LossConfig(variant=variant),
            val_s=sets.test_s, val_t=sets.test_t, run_dir=tmp_path)
    assert not (tmp_path / "checkpoints" / "final.pt").exists()
    state = read_state(tmp_path)  # the last good state: the end of epoch 2
    assert (state.epoch, state.step, state.finished) == (2, 0, False)
    _all_finite(tmp_path)
    with open(tmp_path / "history_steps.csv") as f:
        assert [r["skipped"] for r in csv.DictReader(f)][-3:] == ["latents"] * 3


def test_cli_reports_a_non_finite_stop_in_one_line(tiny_config, tmp_path, monkeypatch, capsys):
    import sidda.experiments.training

    monkeypatch.setattr(sidda.experiments.training, "build_model",
                        lambda *a, **k: Flaky({c: "logits" for c in range(1, 100)}))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config.override(["train.threads=1"]).to_yaml())
    assert main(["train", "--config", str(cfg), "-q"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sidda:")]
    assert len(err) == 1 and err[0].startswith("sidda: error: 5 steps in a row")


# ------------------------------------------------------------------------ failed writes


def test_a_write_into_a_non_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"could not write .*file/run\.json: Not a directory"):
        atomic_write(tmp_path / "file" / "run.json", "{}")


def test_a_write_beyond_the_file_size_limit_leaves_the_old_file(tmp_path):
    """The kernel refuses the write half-way (RLIMIT_FSIZE, as a full disk would)."""
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery runs under the limit
        os.close(read)
        code = 3
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
            atomic_write(target, b"x" * 100_000)
        except OSError as e:
            os.write(write, str(e).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    assert os.waitpid(pid, 0)[1] == 0, "the write did not fail"
    assert f"could not write {target}" in message and "larger than" in message
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"model": {}}, path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)
