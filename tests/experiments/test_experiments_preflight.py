"""The warnings ``sidda train`` logs before epoch 1, and the summary it prints at the end."""

import json

import numpy as np
import pytest

from conftest import write_config
from sidda import RunConfig
from sidda.cli import main
from sidda.experiments.preflight import plan_warnings, start_warnings


def _cfg(tiny_data, tmp_path, **over):
    d = {"name": "r", "out_dir": "runs", "data": {"path": str(tiny_data)},
         "train": {"epochs": 10, "warmup": 2, "batch_size": 16}}
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            d.setdefault(section, {})[name] = value
        else:
            d[section] = value
    return RunConfig.from_dict(d)


def test_a_sound_config_gets_no_warning(tiny_data, tmp_path):
    assert start_warnings(_cfg(tiny_data, tmp_path)) == []


@pytest.mark.parametrize("over, words", [
    ({"train__warmup": 9}, ["train.warmup=9 leaves 1 of 10"]),
    ({"train__epochs": 2, "train__warmup": 1}, []),  # half the epochs: fine
    ({"train__epochs": 2, "train__warmup": 1, "train__milestones": None}, []),  # defaults
    ({"train__milestones": [5, 10, 12]}, ["[10, 12] at or past the last epoch (10)"]),
    ({"data__image_size": 40}, ["from 16x16 to 40x40 (up by 2.5x)"] * 2),
    ({"data__image_size": 8}, ["from 16x16 to 8x8 (down by 0.5x)"] * 2),
    ({"out_dir": "results/x"}, ["`sidda evaluate results/x/r`"]),
])
def test_each_wasteful_choice_gets_one_line(tiny_data, tmp_path, over, words):
    lines = start_warnings(_cfg(tiny_data, tmp_path, **over))
    assert len(lines) == len(words)
    for line, w in zip(lines, words, strict=True):
        assert w in line and "\n" not in line


def test_a_plan_warns_once_per_line_and_never_about_its_out_dir(tiny_data, tmp_path):
    over = {"train__warmup": 9, "data__image_size": 40, "out_dir": "results/x"}
    plan = [_cfg(tiny_data, tmp_path, **over, train__seed=s) for s in (0, 1)]
    plan.append(_cfg(tiny_data, tmp_path, **over, loss={"method": "source_only"}))
    lines = plan_warnings(plan)
    assert [w for w in lines if "train.warmup=9" in w] == [start_warnings(plan[0])[0]]
    assert len([w for w in lines if "data.image_size=40" in w]) == 2  # source and target
    assert len(lines) == 3 and not any("out_dir" in w for w in lines)
    assert plan_warnings([]) == []


def test_data_that_does_not_load_leaves_the_error_to_training(tmp_path):
    cfg = RunConfig.from_dict({"data": {"path": str(tmp_path / "none"), "image_size": 40},
                               "out_dir": "runs", "train": {"epochs": 10, "warmup": 9}})
    assert [w.split(" ")[0] for w in start_warnings(cfg)] == ["train.warmup=9"]


def test_source_only_has_no_alignment_to_warn_about(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path, train__warmup=9, loss={"method": "source_only"})
    assert start_warnings(cfg) == []


def test_warnings_come_before_epoch_1_and_the_summary_at_the_end(tmp_path, tiny_data, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)  # out_dir is tmp_path/runs: runs/ from here, no warning
    cfg = write_config(tmp_path, tiny_data, name="w", train={"epochs": 3, "milestones": [3]})
    assert main(["train", "-q", "--config", str(cfg)]) == 0  # -q: warnings only
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1 and "train.milestones [3] at or past the last epoch (3)" in err[0]
    run = tmp_path / "runs" / "w"
    summary = json.loads((run / "summary.json").read_text())
    assert main(["train", "--config", str(cfg), "--force"]) == 0
    err = capsys.readouterr().err.splitlines()
    warn = next(i for i, m in enumerate(err) if "at or past the last epoch" in m)
    assert warn < next(i for i, m in enumerate(err) if m.startswith("epoch 1/3"))
    out = captured.out
    best = summary["best_epochs"]
    assert f"trained {run} in " in out and "(3 epochs)" in out
    assert f"epoch {best['best_val_acc']} by validation accuracy" in out
    assert f"epoch {best['best_val_loss']} by validation loss" in out
    assert "final (epoch 3)" in out and str(run / "checkpoints") in out
    assert f"source accuracy {summary['final']['val_acc_s']:.4f}" in out
    assert f"next: sidda evaluate {run}" in out
    assert f"sidda report {run} --out w_report.html" in out  # outside the run: rerunnable


def test_the_data_layers_normalisation_check_is_a_start_warning(tmp_path):
    from sidda.datasets import write_layout

    rng = np.random.default_rng(0)
    clean = np.zeros((40, 16, 16), np.float32)
    clean[:, 4:12, 4:12] = 1.0  # noise-free: MAD 0 under asinh
    noisy = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
    y = np.arange(40) % 2
    write_layout(tmp_path / "d", {"x_train_s": clean, "y_train_s": y, "x_test_s": clean,
                                  "y_test_s": y, "x_train_t": noisy, "x_test_t": noisy},
                 manifest={"generator": "test"})
    cfg = RunConfig.from_dict({"data": {"path": str(tmp_path / "d"), "normalize": "asinh"},
                               "train": {"epochs": 10, "warmup": 2, "batch_size": 8}})
    lines = [w for w in start_warnings(cfg) if w.startswith("data.normalize=asinh: band 0")]
    assert len(lines) == 1 and "by their std" in lines[0]
    half = RunConfig.from_dict({"data": {"path": str(tmp_path / "d")},
                                "train": {"epochs": 10, "warmup": 2, "batch_size": 8}})
    assert not [w for w in start_warnings(half) if w.startswith("data.normalize")]
