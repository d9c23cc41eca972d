"""Configs that ship in the package: ``--config NAME``, ``sidda config list``, the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sidda import ConfigError, InputError, RunConfig
from sidda.cli import main
from sidda.configs import CONFIG_DIR, resolve_config, shipped_configs

ROOT = Path(__file__).resolve().parents[2]


def test_the_paper_experiments_and_the_compare_base_are_shipped():
    names = shipped_configs()
    assert "compare" in names and "paper/shapes_d4" in names and "paper/astro_cnn" in names
    assert all(p.is_file() and p.is_relative_to(CONFIG_DIR) for p in names.values())
    assert RunConfig.from_yaml(names["paper/shapes_d4"]).model.name == "d4"
    # the README's workflow trains the compare base into runs/, where evaluate looks next
    assert RunConfig.from_yaml(names["compare"]).out_dir == "runs"


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compare").write_text("name: mine\n")
    assert resolve_config("compare") == Path("compare")
    assert resolve_config("paper/shapes_d4.yaml") == CONFIG_DIR / "paper" / "shapes_d4.yaml"
    assert resolve_config("paper/shapes_d4") == CONFIG_DIR / "paper" / "shapes_d4.yaml"


def test_an_unknown_name_says_where_the_shipped_ones_are_and_the_close_names():
    with pytest.raises(InputError) as e:
        resolve_config("paper/shape_d4")
    msg = str(e.value)
    assert "paper/shapes_d4" in msg and str(CONFIG_DIR) in msg and "sidda config list" in msg
    with pytest.raises(InputError, match="did you mean paper/astro_cnn"):
        resolve_config("astro_cnn")


def test_unknown_config_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "paper/shapes_d5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "paper/shapes_d4" in err[0] and not (tmp_path / "runs").exists()


def test_config_list_names_every_shipped_config(capsys):
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    for name in shipped_configs():
        assert f"\n{name} " in "\n" + out


def test_train_takes_a_shipped_name(tmp_path, tiny_data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "-q", "--config", "compare", "--set", f"data.path={tiny_data}",
            "name=mine", "data.image_size=null", "train.epochs=2", "train.warmup=1",
            "train.batch_size=16", "train.threads=1", "train.milestones=null"]
    assert main(args) == 0
    assert (tmp_path / "runs" / "mine" / "checkpoints" / "final.pt").is_file()
    assert "sidda evaluate runs/mine" in capsys.readouterr().out


def test_a_run_name_with_a_line_break_is_refused():
    with pytest.raises(ConfigError, match="control character"):
        RunConfig.from_dict({"name": "x\ny"})


@pytest.mark.slow
def test_the_wheel_holds_the_configs(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("sidda-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in shipped_configs():
        assert f"sidda/configs/{name}.yaml" in names
