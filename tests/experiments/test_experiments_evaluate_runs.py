"""evaluate_runs: evaluate what is missing (or everything), before a report renders."""

import json

import pytest

from sidda import RunConfig
from sidda.experiments import evaluate_runs, train_run
from sidda.runs import RunDir


@pytest.fixture
def runs(tmp_path, tiny_data):
    out = []
    for name in ("a", "b"):
        out.append(train_run(RunConfig.from_dict({
            "name": name, "out_dir": str(tmp_path / "runs"), "data": {"path": str(tiny_data)},
            "model": {"name": "cnn", "latent_dim": 16},
            "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1},
        })))
    return out


def test_evaluate_runs_evaluates_only_what_is_missing(runs):
    a, b = runs
    assert RunDir(a).needs_evaluation() and RunDir(b).needs_evaluation()
    first = evaluate_runs([a], checkpoint="best_val_loss")
    assert first[0]["checkpoint"] == "best_val_loss" and not RunDir(a).needs_evaluation()
    stamp = (a / "metrics.json").stat().st_mtime_ns
    both = evaluate_runs([a, b])  # a is complete: read as it is, of its own checkpoint
    assert (a / "metrics.json").stat().st_mtime_ns == stamp
    assert [m["checkpoint"] for m in both] == ["best_val_loss", "final"]
    assert both[0] == json.loads((a / "metrics.json").read_text())
    (a / "latents_target.npy").unlink()  # an incomplete evaluation is done again
    assert RunDir(a).needs_evaluation()
    assert evaluate_runs([a, b])[0]["checkpoint"] == "final"
    assert not RunDir(a).needs_evaluation()


def test_evaluate_runs_always_reevaluates(runs):
    a, _ = runs
    evaluate_runs([a])
    again = evaluate_runs([a], when="always", checkpoint="best_val_acc", n_bins=7)
    assert again[0]["checkpoint"] == "best_val_acc" and again[0]["n_bins"] == 7
    assert json.loads((a / "metrics.json").read_text())["n_bins"] == 7


@pytest.mark.parametrize("options, message", [
    ({"when": "never"}, "when must be"),
    ({"checkpoint": "last"}, "unknown checkpoint"),
    ({"n_bins": 0}, "bins"),
])
def test_bad_options_fail_before_any_evaluation(runs, options, message):
    with pytest.raises(ValueError, match=message):
        evaluate_runs(runs, **options)
    assert all(not (r / "metrics.json").exists() for r in runs)


def test_evaluating_a_run_whose_training_data_changed_says_so(runs, tiny_data, caplog):
    """The same file names and sizes, other pixels: the SHA-256 of environment.json tells."""
    import numpy as np

    a, _ = runs
    evaluate_runs([a])
    assert json.loads((a / "metrics.json").read_text())["notes"] == []
    x = tiny_data / "train" / "x_train_noise.npy"
    np.save(x, np.load(x)[::-1].copy())  # the same images in another order
    caplog.clear()
    notes = evaluate_runs([a], when="always")[0]["notes"]
    assert len(notes) == 1 and "train/x_train_noise.npy" in notes[0]
    assert "x_train.npy" not in notes[0].replace("x_train_noise.npy", "")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("training data changed" in w and "train/x_train_noise.npy" in w for w in warned)


def test_validators_skipped_for_every_checkpoint_are_said_once(tmp_path, caplog):
    import logging

    from conftest import write_tiny_data

    data = write_tiny_data(tmp_path / "small", n_train=12, n_test=6)  # 2-3 validation images
    run = train_run(RunConfig.from_dict({
        "name": "small", "out_dir": str(tmp_path / "runs"), "data": {"path": str(data)},
        "model": {"name": "cnn", "latent_dim": 16},
        "train": {"epochs": 2, "warmup": 1, "batch_size": 4, "seed": 0, "threads": 1},
    }))
    caplog.set_level(logging.WARNING, logger="sidda")
    metrics = evaluate_runs([run])[0]
    candidates = metrics["selection"]["candidates"]
    assert len(candidates) == 3 and all(c.get("validators_skipped") for c in candidates.values())
    said = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("validators skipped")]
    assert len(said) == 1
    assert all(name in said[0] for c in candidates.values() for name in c["validators_skipped"])
