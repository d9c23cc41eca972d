"""Custom backbones (``model.name: "package.module:callable"``) built from real modules."""

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from sidda import InputError, ModelConfig, RunConfig, build_model, export_model
from sidda.models import parse_model_name

MODULE = "sidda_test_nets"  # written into tmp_path by the `nets` fixture

NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels, num_classes, latent_dim, out=None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, latent_dim)
        self.head = nn.Linear(latent_dim, num_classes)
        self.out = out

    def forward(self, x):
        z = self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))  # (B, D)
        logits = self.head(z)  # (B, K)
        if self.out == "one":
            return logits
        if self.out == "three":
            return z, logits, z
        if self.out == "flat":
            return z.flatten(), logits
        if self.out == "wrong_k":
            return z, logits[:, :1]
        if self.out == "raise":
            raise RuntimeError("boom")
        if self.out == "raise_training" and self.training:
            raise RuntimeError("broken in training")
        return z, logits


def make_net(*, in_channels, num_classes, image_size, latent_dim, **kwargs):
    return Net(in_channels, num_classes, latent_dim)


class Factory:
    @staticmethod
    def small(**kw):
        return Net(kw["in_channels"], kw["num_classes"], 16)


def make_with(out):
    return lambda **kw: Net(kw["in_channels"], kw["num_classes"], 8, out=out)


one, three, flat, wrong_k, raises, breaks = (make_with(o) for o in (
    "one", "three", "flat", "wrong_k", "raise", "raise_training"))
NOT_CALLABLE = 3


def positional_only(in_channels, num_classes):
    return Net(in_channels, num_classes, 8)


def not_a_module(**kw):
    return [nn.Linear(2, 2)]


def no_parameters(**kw):
    return nn.Identity()
'''


@pytest.fixture
def nets(tmp_path, monkeypatch):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(NETS)
    (folder / "sidda_test_broken.py").write_text("import sidda_no_such_dependency_xyz\n")
    (folder / "sidda_test_syntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in (MODULE, "sidda_test_broken", "sidda_test_syntax"):
        sys.modules.pop(name, None)


def _build(name, **kw):
    return build_model(name, **{"in_channels": 2, "num_classes": 3, "image_size": 12, **kw})


def test_the_form_is_a_valid_model_name():
    assert parse_model_name("mypkg.nets:make_net") == ("custom", 0)
    assert parse_model_name("a:B.c") == ("custom", 0)
    assert ModelConfig(name="mypkg.nets:make_net").name == "mypkg.nets:make_net"
    cfg = RunConfig().override(["model.name=mypkg.nets:make_net"])
    assert cfg.model.name == "mypkg.nets:make_net"
    # the YAML a run saves reads back (the name is not imported until a model is built)
    assert RunConfig.from_dict(cfg.to_dict()).model.name == "mypkg.nets:make_net"
    for bad in ("mypkg.nets:", ":make_net", "a:b:c", "my-pkg:f", "a.b", "a:b c"):
        with pytest.raises(InputError, match="unknown model.*package.module:callable"):
            parse_model_name(bad)


def test_yaml_and_the_command_line_take_the_name(nets, tiny_data, tmp_path, capsys):
    from sidda.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        name: custom
        out_dir: {tmp_path / "runs"}
        data: {{path: {tiny_data}}}
        model:
          name: {MODULE}:make_net
        train: {{epochs: 1, warmup: 0, batch_size: 16, threads: 1}}
        loss: {{method: source_only}}
    """))
    assert RunConfig.from_yaml(cfg).model.name == f"{MODULE}:make_net"
    flow = tmp_path / "flow.yaml"
    flow.write_text(f'model: {{name: "{MODULE}:make_net"}}\n')
    assert RunConfig.from_yaml(flow).model.name == f"{MODULE}:make_net"
    assert main(["train", "-q", "--config", str(cfg)]) == 0
    assert main(["evaluate", "-q", str(tmp_path / "runs" / "custom")]) == 0
    capsys.readouterr()
    assert main(["train", "-q", "--config", str(cfg), "--force",
                 "--set", "model.name=sidda_no_such_module_xyz:make_net"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot import module 'sidda_no_such_module_xyz'" in err[0], err


def test_a_network_that_fails_in_training_is_named_not_called_a_bug_in_sidda(
        nets, tiny_data, tmp_path, capsys):
    """It passes the build-time check (eval mode), then raises in its first training step."""
    from sidda.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        name: breaks
        out_dir: {tmp_path / "runs"}
        data: {{path: {tiny_data}}}
        model: {{name: "{MODULE}:breaks"}}
        train: {{epochs: 1, warmup: 0, batch_size: 16, threads: 1}}
    """))
    assert main(["train", "-q", "--config", str(cfg)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sidda:")]
    assert len(err) == 1 and err[0].startswith(f"sidda: error: model.name='{MODULE}:breaks': "
                                               "the network raised RuntimeError: broken in "
                                               "training (in forward, "), err
    assert f"{MODULE}.py:" in err[0] and "internal error" not in err[0]


def test_builds_and_checks_a_custom_backbone(nets):
    m = _build(f"{MODULE}:make_net", in_channels=5, latent_dim=32)
    assert type(m).__name__ == "Net" and m.training
    z, logits = m(torch.randn(4, 5, 12, 12))
    assert z.shape == (4, 32) and logits.shape == (4, 3)
    # a dotted attribute path, and a latent width of the model's own choosing
    z, _ = _build(f"{MODULE}:Factory.small")(torch.randn(2, 2, 12, 12))
    assert z.shape == (2, 16)
    e = export_model(m)
    assert e is not m and not e.training
    x = torch.ones(1, 5, 12, 12)
    torch.testing.assert_close(e(x)[1], m.eval()(x)[1])


@pytest.mark.parametrize("name, message", [
    ("sidda_no_such_module_xyz:make_net", r"cannot import module 'sidda_no_such_module_xyz'.*"
                                          r"PYTHONPATH.*pip install -e"),
    ("sidda_no_such_pkg_xyz.nets:make_net", r"cannot import module 'sidda_no_such_pkg_xyz.nets'"),
    ("sidda_test_broken:f", r"importing module 'sidda_test_broken' failed: No module named "
                            r"'sidda_no_such_dependency_xyz'; install"),
    ("sidda_test_syntax:f", r"importing module 'sidda_test_syntax' raised SyntaxError"),
    (f"{MODULE}:missing", r"has no attribute 'missing'; check the name after the ':'"),
    (f"{MODULE}:Factory.missing", r"has no attribute 'Factory.missing'"),
    (f"{MODULE}:NOT_CALLABLE", r"NOT_CALLABLE is a int, not a callable"),
    (f"{MODULE}:positional_only", r"cannot take the keyword arguments in_channels, num_classes, "
                                  r"image_size, dropout, latent_dim .*\*\*kwargs"),
    ("subprocess:run", r"calling it with the keyword arguments in_channels, num_classes, "
                       r"image_size, dropout, latent_dim raised TypeError: .*'in_channels'.*"
                       r"\*\*kwargs"),
    (f"{MODULE}:not_a_module", r"returned a list, not a torch.nn.Module"),
    (f"{MODULE}:no_parameters", r"no parameters"),
    (f"{MODULE}:one", r"returned one tensor of shape \(2, 3\); it must return \(latent, logits\)"),
    (f"{MODULE}:three", r"returned a tuple of 3"),
    (f"{MODULE}:flat", r"returned a tuple of 2: \(tensor \(16,\), tensor \(2, 3\)\)"),
    (f"{MODULE}:wrong_k", r"\(2, D\) and \(2, 3\)"),
    (f"{MODULE}:raises", r"forward pass on images of shape \(2, 2, 12, 12\) raised RuntimeError: "
                         r"boom"),
])
def test_each_mistake_is_a_one_line_input_error(nets, name, message):
    with pytest.raises(InputError, match=message) as info:
        _build(name)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"model.name={name!r}")


def test_a_run_with_a_custom_backbone_trains_and_evaluates_again(nets, tiny_config, monkeypatch):
    from sidda.experiments import evaluate_run, load_run_model, train_run

    cfg = tiny_config.override([f"model.name={MODULE}:make_net", "model.latent_dim=16",
                                "loss.variant=paper", "train.epochs=1", "train.warmup=0",
                                "train.threads=1"])
    run_dir = train_run(cfg)
    assert (run_dir / "checkpoints" / "final.pt").is_file()
    # a fresh import, as a new process would do: the run is rebuilt from the name alone
    sys.modules.pop(MODULE)
    model, info = load_run_model(run_dir)
    assert type(model).__name__ == "Net" and MODULE in sys.modules
    assert info["model"] == f"{MODULE}:make_net"
    report = evaluate_run(run_dir, calibration=False, selection=False)
    assert report["model"] == f"{MODULE}:make_net"
    assert (run_dir / "metrics.json").is_file()
    # without the module on the path the run cannot be rebuilt, and the error says why
    sys.modules.pop(MODULE)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(nets)])
    with pytest.raises(InputError, match="cannot import module.*PYTHONPATH"):
        load_run_model(run_dir)


def test_a_custom_backbone_with_plain_batchnorm_trains_with_robust_sidda(nets, tiny_config):
    """Robust SIDDA's two passes with swapped BatchNorm statistics, on plain nn.BatchNorm."""
    from sidda.experiments import train_run
    from sidda.runs import load_history

    cfg = tiny_config.override([f"model.name={MODULE}:make_net", "loss.variant=robust",
                                "train.epochs=2", "train.warmup=1", "train.threads=1"])
    run_dir = train_run(cfg)
    rows = load_history(run_dir)
    assert [r["phase"] for r in rows] == ["warmup", "sidda"] or rows[-1]["train_da"] is not None
    assert rows[-1]["train_da"] is not None and rows[-1]["train_da"] >= 0


def test_the_example_file_builds_a_five_band_model(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(root / "examples"))
    try:
        m = build_model("custom_backbone:make_net", in_channels=5, num_classes=4, image_size=29,
                        latent_dim=64)
        z, logits = m(torch.randn(3, 5, 29, 29))
        assert z.shape == (3, 64) and logits.shape == (3, 4)
        assert isinstance(m, nn.Module) and sum(p.numel() for p in m.parameters()) > 0
    finally:
        sys.modules.pop("custom_backbone", None)


def test_the_example_file_runs_as_a_script():
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, str(root / "examples" / "custom_backbone.py")],
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    assert "latent (4, 256), logits (4, 3)" in out.stdout
