import csv
import json

import numpy as np
import pytest
import torch
import yaml

from sidda import ConfigError, RunConfig
from sidda.cli import main
from sidda.metrics import DEFAULT_VALIDATOR, validator_agreement
from sidda.sweep import format_table, run_sweep, summarize


def _report(model, method, seed):
    rng = np.random.default_rng(seed + 10 * len(model) + (method == "sidda"))
    dom = lambda: {"accuracy": rng.uniform(), "ece": rng.uniform(), "brier": rng.uniform(),  # noqa: E731
                   "temperature_scaled": {"ece": rng.uniform()}}
    return {"model": model, "method": method, "source": dom(), "target": dom()}


def test_summarize_is_mean_and_sample_std_over_seeds():
    reports = [_report(m, meth, s) for m in ("cnn", "d4") for meth in ("source_only", "sidda")
               for s in (0, 1, 2)]
    rows = summarize(reports)
    assert [(r["model"], r["method"], r["n_seeds"]) for r in rows] == [
        ("cnn", "source_only", 3), ("cnn", "sidda", 3), ("d4", "source_only", 3),
        ("d4", "sidda", 3)]
    for row in rows:
        group = [r for r in reports if (r["model"], r["method"]) == (row["model"], row["method"])]
        for dom in ("source", "target"):
            for key in ("accuracy", "ece", "brier"):
                vals = [r[dom][key] for r in group]
                assert row[f"{dom}_{key}_mean"] == pytest.approx(sum(vals) / 3)
                var = sum((v - sum(vals) / 3) ** 2 for v in vals) / 2
                assert row[f"{dom}_{key}_std"] == pytest.approx(var**0.5)
        vals = [r["target"]["temperature_scaled"]["ece"] for r in group]
        assert row["target_ece_ts_mean"] == pytest.approx(np.mean(vals))
    one = summarize([_report("cnn", "sidda", 0)])[0]
    assert one["target_accuracy_std"] == 0.0
    assert "cnn" in format_table(rows) and "+-" in format_table(rows)


def test_bad_sweeps_fail_before_training(tmp_path, tiny_config):
    with pytest.raises(ConfigError, match="unknown method"):
        run_sweep(tiny_config, models=["cnn"], seeds=[0], methods=["bogus"], out=tmp_path / "s")
    with pytest.raises(ConfigError, match="unknown model"):
        run_sweep(tiny_config, models=["cnn", "vgg"], seeds=[0], out=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    (tmp_path / "cfg.yaml").write_text(tiny_config.to_yaml())
    assert main(["sweep", "--config", str(tmp_path / "cfg.yaml"), "--models", "cnn",
                 "--seeds", "0,one", "--out", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_sweep_two_models_two_seeds_end_to_end(tmp_path, tiny_data, capsys):
    cfg = {"name": "x", "out_dir": str(tmp_path / "ignored"), "data": {"path": str(tiny_data)},
           "model": {"name": "cnn"},
           "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sweep"
    argv = ["sweep", "--config", str(tmp_path / "cfg.yaml"), "--models", "cnn,c2",
            "--seeds", "0,1", "--out", str(out), "--no-report", "-q"]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(n)
    printed = capsys.readouterr().out
    # the order of the standings: config by config (model, method), then seed by seed
    res_order = [f"{m}_{meth}_seed{s}" for m in ("cnn", "c2") for meth in ("source_only", "sidda")
                 for s in (0, 1)]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(f"{m}_{meth}_seed{s}" for m in ("cnn", "c2") for s in (0, 1)
                          for meth in ("source_only", "sidda"))
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["model"], r["method"], r["n_seeds"]) for r in rows] == [
        ("cnn", "source_only", "2"), ("cnn", "sidda", "2"), ("c2", "source_only", "2"),
        ("c2", "sidda", "2")]
    for r in rows:
        accs = [json.loads((out / "runs" / f"{r['model']}_{r['method']}_seed{s}" /
                            "metrics.json").read_text())["target"]["accuracy"] for s in (0, 1)]
        assert float(r["target_accuracy_mean"]) == pytest.approx(np.mean(accs))
        assert float(r["target_accuracy_std"]) == pytest.approx(np.std(accs, ddof=1))
        assert f"{r['model']:<8}{r['method']:<13}" in printed
    # Target labels: how far each validator agrees with target accuracy over the 8 runs.
    metrics = {p.name: json.loads((p / "metrics.json").read_text())
               for p in (out / "runs").iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validator"] == DEFAULT_VALIDATOR and summary["ranking"] is None
    assert summary["agreement"] == validator_agreement([
        {"name": n, "validators": m["label_free"]["validators"],
         "target_accuracy": m["target"]["accuracy"]} for n, m in sorted(
            metrics.items(), key=lambda kv: res_order.index(kv[0]))])
    agree = list(csv.DictReader(open(out / "sweep_agreement.csv")))
    assert [r["validator"] for r in agree] == list(summary["agreement"]["validators"])
    assert "How far each label-free validator can be trusted here" in printed
    for r in rows:
        flags = [metrics[f"{r['model']}_{r['method']}_seed{s}"]["label_free"]["collapse"]["flag"]
                 for s in (0, 1)]
        assert r["collapse_per_seed"] == " ".join(map(str, flags))
    fig = out / "figure5.png"
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 5000
    assert (out / "summary.txt").is_file() and not (out / "report.html").exists()
    # A second call reuses the finished run (nothing retrained) and writes the report.
    final = out / "runs" / "cnn_sidda_seed0" / "checkpoints" / "final.pt"
    stamp = final.stat().st_mtime_ns
    res = run_sweep(RunConfig.from_yaml(tmp_path / "cfg.yaml"), models=["cnn"], seeds=[0],
                    out=out, methods=["sidda"])
    assert final.stat().st_mtime_ns == stamp
    metrics = json.loads((out / "runs" / "cnn_sidda_seed0" / "metrics.json").read_text())
    assert res.rows[0]["target_accuracy_mean"] == metrics["target"]["accuracy"]
    page = res.report.read_text()
    assert "Sweep: mean" in page and "alt='distance against epoch'" in page
    with pytest.raises(ConfigError, match="different config"):
        run_sweep(RunConfig.from_yaml(tmp_path / "cfg.yaml").override(["train.lr=0.5"]),
                  models=["cnn"], seeds=[0], out=out, methods=["sidda"], report=False)


def test_sweep_without_target_labels_ranks_its_configs_by_the_chosen_validator(tmp_path,
                                                                               capsys):
    from conftest import write_tiny_data

    data = write_tiny_data(tmp_path / "d", target_labels=False)
    cfg = {"name": "x", "out_dir": str(tmp_path / "ignored"), "data": {"path": str(data)},
           "model": {"name": "cnn", "latent_dim": 16},
           "train": {"epochs": 2, "warmup": 1, "batch_size": 8, "seed": 0, "threads": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sweep"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["sweep", "--config", str(tmp_path / "cfg.yaml"), "--models", "cnn",
                     "--out", str(out), "--no-report", "--validator", "entropy", "-q"]) == 0
    finally:
        torch.set_num_threads(n)
    captured = capsys.readouterr()
    printed = captured.out
    assert "out_dir is" not in captured.err  # the sweep chose the runs' folders
    assert ("configs ranked by ENTROPY (a label-free validator; see docs/evaluation.md for how "
            "far to trust it)") in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validator"] == "entropy" and summary["agreement"] is None
    metrics = {m: json.loads((out / "runs" / f"cnn_{m}_seed0" / "metrics.json").read_text())
               for m in ("source_only", "sidda")}
    lf = {m: metrics[m]["label_free"] for m in metrics}
    order = sorted(metrics, key=lambda m: (bool(lf[m]["collapse"]["flag"]),
                                           -lf[m]["validators"]["entropy"]))
    assert [e["name"] for e in summary["ranking"]["groups"]] == [f"cnn {m}" for m in order]
    assert [e["name"] for e in summary["ranking"]["runs"]] == [f"cnn_{m}_seed0" for m in order]
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [float(r["validator_mean"]) for r in rows] == pytest.approx(
        [lf[m]["validators"]["entropy"] for m in ("source_only", "sidda")])
    assert (out / "sweep_agreement.csv").read_text().startswith("validator,default,")
