"""``train.log``: history.csv written at every epoch end, TensorBoard event files read back with
TensorBoard's own reader, and a clear exit when tensorboard is missing."""

import sys

import numpy as np
import pytest

from conftest import write_config
from sidda import ConfigError, RunConfig, TrainConfig
from sidda.cli import main
from sidda.experiments import train_run
from sidda.runs import RunDir


def test_history_csv_holds_each_epoch_before_the_next_one_starts(tiny_config):
    seen = {}

    def reader(event, rec):  # during epoch e, history.csv must already hold epochs 1..e-1
        if event == "step":
            rows = RunDir(tiny_config.run_dir).history().epochs  # [] before the first write
            seen.setdefault(rec["epoch"], [int(r["epoch"]) for r in rows])

    train_run(tiny_config, callbacks=[reader])
    assert seen == {1: [], 2: [1], 3: [1, 2]}


def test_train_log_accepts_the_known_loggers_only():
    assert TrainConfig().log == ("csv",)
    assert RunConfig().override(["train.log=['csv', 'tensorboard']"]).train.log == (
        "csv", "tensorboard")
    for bad in ("['wandb']", "['csv', 'csv']", "csv"):
        with pytest.raises(ConfigError, match="train.log"):
            RunConfig().override([f"train.log={bad}"])


def test_tensorboard_event_files_hold_the_history(tmp_path, tiny_data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = write_config(tmp_path, tiny_data, name="tb", train={"epochs": 3,
                                                             "log": ["csv", "tensorboard"]})
    assert main(["train", "-q", "--config", str(cfg)]) == 0
    run = RunDir(tmp_path / "runs" / "tb")
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    hist = run.history()
    for key in ("val_acc_s", "train_ce", "val_total"):
        events = acc.Scalars(f"epoch/{key}")
        assert [e.step for e in events] == [1, 2, 3]
        want = np.array([r[key] for r in hist.epochs], dtype=np.float32)
        np.testing.assert_array_equal(np.array([e.value for e in events], np.float32), want)
    ce = acc.Scalars("step/ce")
    assert [e.step for e in ce] == [int(r["step"]) for r in hist.steps]
    np.testing.assert_array_equal(np.array([e.value for e in ce], np.float32),
                                  np.array([r["ce"] for r in hist.steps], np.float32))


def test_tensorboard_asked_for_but_missing_exits_2_before_anything(tmp_path, tiny_data, capsys,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    cfg = write_config(tmp_path, tiny_data, name="tb", train={"log": ["tensorboard"]})
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'sidda[tensorboard]'" in err[0]
    assert not (tmp_path / "runs" / "tb").exists()
