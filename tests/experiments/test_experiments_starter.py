"""``sidda config new`` and ``sidda train --data``: a starter config sized to the data."""

import math

import numpy as np
import pytest
import yaml

from conftest import write_tiny_data
from sidda import RunConfig
from sidda.cli import main
from sidda.datasets import write_layout
from sidda.experiments.starter import TARGET_STEPS, starter_config


def test_the_starter_follows_the_documented_rules(tiny_data):
    s = starter_config(tiny_data)
    n_s = 48 - math.floor(48 * 0.2)  # 39 source (and target) training images
    batch = 8  # largest power of two <= 39 // 4 = 9
    steps = math.ceil(n_s / batch)
    epochs = min(60, max(10, math.ceil(TARGET_STEPS / steps)))
    t = s.cfg.train
    assert (t.batch_size, t.epochs, t.warmup) == (batch, epochs, epochs // 4)
    assert t.milestones is None and max(t.resolved_milestones()) < t.epochs
    assert s.cfg.data.image_size is None and s.cfg.out_dir == "runs"
    assert s.cfg.data.path == str(tiny_data) and s.cfg.name == "data"
    assert s.cfg.data.normalize == "per_band_standard"  # the blobs are not in [0, 1]
    assert RunConfig.from_dict(yaml.safe_load(s.text)) == s.cfg  # the text is the config
    assert s.text.count("#") > 10  # commented


def test_images_in_unit_range_keep_the_papers_scaling(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {k: rng.uniform(0, 1, (400, 32, 32)).astype(np.float32)
              for k in ("x_train_s", "x_test_s", "x_train_t", "x_test_t")}
    arrays.update({k: np.arange(400) % 2 for k in ("y_train_s", "y_test_s")})
    root = tmp_path / "unit"
    write_layout(root, arrays, manifest={"generator": "test"})
    s = starter_config(root, model="d4")
    assert s.cfg.data.normalize == "half" and s.cfg.model.name == "d4"
    assert s.cfg.train.batch_size == 64  # 320 // 4 = 80 -> 64
    assert s.cfg.train.epochs == 60  # 5 steps per epoch: the cap


def test_config_new_writes_refuses_to_replace_and_train_data_runs(tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_tiny_data(tmp_path / "mine")
    assert main(["config", "new", "--data", str(data), "--out", "cfg/mine.yaml"]) == 0
    text = (tmp_path / "cfg" / "mine.yaml").read_text()
    assert RunConfig.from_dict(yaml.safe_load(text)).train.batch_size == 8
    assert main(["config", "new", "--data", str(data), "--out", "cfg/mine.yaml"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "cfg" / "mine.yaml").read_text() == text
    assert main(["train", "-q", "--data", str(data), "--set", "train.epochs=2",
                 "train.warmup=1", "train.threads=1"]) == 0
    run = tmp_path / "runs" / "mine"
    assert (run / "checkpoints" / "final.pt").is_file()
    assert RunConfig.from_yaml(run / "config.yaml").train.batch_size == 8


def test_config_new_on_a_folder_that_is_not_data_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["config", "new", "--data", str(tmp_path / "empty")]) == 2
    assert "not a data folder" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["vgg"])
def test_an_unknown_model_is_an_argument_error(tiny_data, model):
    with pytest.raises(SystemExit) as e:
        main(["config", "new", "--data", str(tiny_data), "--model", model])
    assert e.value.code == 2
