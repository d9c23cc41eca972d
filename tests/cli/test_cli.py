import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import write_config
from sidda.cli import main


def _config(tmp_path, data, **train):
    return write_config(tmp_path, data, name="run1", train=train)


def test_train_then_evaluate(tmp_path, tiny_data, capsys):
    cfg = _config(tmp_path, tiny_data)
    assert main(["train", "--config", str(cfg), "-q", "--set", "model.name=c4"]) == 0
    run = tmp_path / "runs" / "run1"
    for f in ("config.yaml", "argv.txt", "run.json", "environment.json", "data_manifest.json",
              "history.csv", "history_steps.csv", "summary.json", "checkpoints/final.pt"):
        assert (run / f).is_file(), f
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "c4"
    assert main(["evaluate", str(run), "-q"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["method"] == "sidda" and m["model"] == "c4"
    for dom in ("source", "target"):
        assert 0 <= m[dom]["accuracy"] <= 1 and 0 <= m[dom]["ece"] <= 1
        assert 0 <= m[dom]["brier"] <= 2 and m[dom]["nll"] >= 0
        assert np.array(m[dom]["confusion_matrix"]).sum() == 24
        probs = np.load(run / f"probs_{dom}.npy")
        labels = np.load(run / f"labels_{dom}.npy")
        assert probs.shape == (24, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert np.load(run / f"latents_{dom}.npy").shape == (24, 256)
        assert m[dom]["accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())
    out = capsys.readouterr().out
    assert "tar_accuracy" in out


def test_bad_input_file_exits_2_and_leaves_no_run(tmp_path, tiny_data, capsys):
    np.save(tiny_data / "train" / "y_train.npy", np.array([0, 1, 7.5]))
    cfg = _config(tmp_path, tiny_data)
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error: ") and "y_train.npy" in err[0]
    assert not (tmp_path / "runs" / "run1").exists()


@pytest.mark.parametrize("override, match", [
    ("train.batch_size=4096", "larger than"),
    ("data.num_classes=5", "num_classes"),
    ("train.warmup=9", "warmup"),
    ("model.name=vgg", "unknown model"),
    ("data.path=/nonexistent", "data folder not found"),
])
def test_bad_configs_exit_2(tmp_path, tiny_data, capsys, override, match):
    cfg = _config(tmp_path, tiny_data)
    assert main(["train", "--config", str(cfg), "--set", override]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "runs" / "run1").exists()


def test_existing_run_is_not_overwritten(tmp_path, tiny_data, capsys):
    cfg = _config(tmp_path, tiny_data, epochs=2)
    run = tmp_path / "runs" / "run1"
    run.mkdir(parents=True)
    (run / "precious.txt").write_text("keep")
    assert main(["train", "--config", str(cfg), "-q"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "precious.txt").read_text() == "keep"
    assert main(["train", "--config", str(cfg), "-q", "--force"]) == 0
    assert not (run / "precious.txt").exists()


def test_evaluate_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["--help"], ["train", "--help"], ["evaluate", "--help"],
                                 ["data", "make", "--help"], ["demo", "--help"]])
def test_help(cmd):
    r = subprocess.run([sys.executable, "-m", "sidda", *cmd], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: sidda" in r.stdout


def test_data_make_writes_the_layout(tmp_path):
    out = tmp_path / "shapes"
    assert main(["data", "make", "shapes", "--out", str(out), "--n-per-class", "6",
                 "--image-size", "32", "-q"]) == 0
    for f in ("train/x_train.npy", "train/y_train.npy", "train/x_train_noise.npy",
              "test/x_test.npy", "test/y_test.npy", "test/x_test_noise.npy", "manifest.json"):
        assert (out / f).is_file(), f
    man = json.loads((out / "manifest.json").read_text())
    assert man["protocol"] == "clean" and man["seed"] == 0
    assert main(["data", "make", "shapes", "--out", str(out), "--n-per-class", "6"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name, shift", [("shapes", None), ("astro", None), ("mnist-m", "noise"),
                                         ("mnist-m", "psf")])
@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_train_runs_on_every_generated_dataset(tmp_path, name, shift, protocol):
    data = tmp_path / "d"
    args = ["data", "make", name, "--out", str(data), "--n-per-class", "5", "--protocol",
            protocol, "-q"]
    if shift:
        args += ["--shift", shift]
    if name != "mnist-m":
        args += ["--image-size", "24"]
    assert main(args) == 0
    suffix = "_PSF" if shift == "psf" else "_noise"
    cfg = {
        "name": "r", "out_dir": str(tmp_path / "runs"),
        "data": {"path": str(data), "target_suffix": suffix},
        "train": {"epochs": 2, "warmup": 1, "batch_size": 8, "seed": 0},
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(p), "-q"]) == 0
    assert (tmp_path / "runs" / "r" / "checkpoints" / "final.pt").is_file()
    man = json.loads((tmp_path / "runs" / "r" / "data_manifest.json").read_text())
    assert man["protocol"] == protocol


@pytest.mark.parametrize("dataset", ["astro", "shapes"])
def test_demo_keeps_data_and_every_run(tmp_path, capsys, dataset):
    out = tmp_path / "demo"
    assert main(["demo", "-q", "--out", str(out), "--dataset", dataset, "--n-per-class", "8",
                 "--image-size", "24", "--epochs", "2", "--warmup", "1",
                 "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "target accuracy: source-only" in printed
    assert "SIDDA paper" in printed and "SIDDA robust" in printed
    for name, method, variant in (("source_only", "source_only", None),
                                  ("sidda_paper", "sidda", "paper"),
                                  ("sidda_robust", "sidda", "robust")):
        m = json.loads((out / "runs" / f"cnn_{name}" / "metrics.json").read_text())
        assert m["method"] == method and 0 <= m["target"]["accuracy"] <= 1
        cfg = yaml.safe_load((out / "runs" / f"cnn_{name}" / "config.yaml").read_text())
        assert cfg["loss"]["variant"] == variant
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert dataset in json.dumps(manifest)
    # a second demo into the same folder is refused, nothing overwritten
    assert main(["demo", "-q", "--out", str(out), "--dataset", dataset]) == 2


def test_sigterm_outside_training_stops_with_one_line_and_status_143(tmp_path, capsys,
                                                                      monkeypatch):
    """A real SIGTERM while ``data make`` draws (held there so the signal cannot miss it):
    one line, 128 + 15, nothing written, and the previous SIGTERM handler back in place."""
    import os
    import signal
    import time

    import sidda.cli.data_commands as data_commands

    def drawing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # interrupted long before
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(data_commands, "make_dataset", drawing)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    assert main(["data", "make", "shapes", "--out", str(tmp_path / "d")]) == 143
    assert time.monotonic() - t0 < 20
    assert capsys.readouterr().err.strip().splitlines()[-1] == "sidda: interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
    assert list(tmp_path.iterdir()) == []
