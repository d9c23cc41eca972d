import csv
import json
import shutil

import numpy as np
import pytest

from conftest import write_config
from sidda import ConfigError, RunConfig
from sidda.cli import main
from sidda.compare import (
    format_markdown,
    gap_closed,
    parse_data,
    parse_method,
    run_compare,
    summarize_compare,
)
from sidda.methods.config import OPTIONS, LossConfig, defaults, method_loss
from sidda.runs import load_checkpoint

DOMAIN_KEYS = (("source", "accuracy"), ("target", "accuracy"), ("target", "ece"),
               ("target", "brier"), ("source", "ece"))


def _config(tmp_path, data, **loss):
    return write_config(tmp_path, data, name="x", out_dir=str(tmp_path / "ignored"),
                        model={"latent_dim": 16}, train={"batch_size": 8},
                        loss={"method": "sidda", "eta_mode": "clean", **loss})


def _metrics(out, data, folder, seed):
    return json.loads((out / "runs" / data / f"{folder}_seed{seed}" / "metrics.json").read_text())


# --------------------------------------------------------------------------- fast


def test_method_loss_keeps_only_the_new_methods_options():
    base = RunConfig().override(["loss.variant=paper", "loss.eta_mode=clean",
                                 "loss.blur_factor=0.1"]).to_dict()["loss"]
    assert method_loss(base, "source_only") == {"method": "source_only"}
    assert method_loss(base, "dan") == {"method": "dan"}
    sidda = method_loss(base, "sidda", variant="robust")
    assert sidda["eta_mode"] == "clean" and sidda["blur_factor"] == 0.1
    assert sidda["variant"] == "robust" and "weight" not in sidda
    assert method_loss({"method": "mcc", "temperature": 3.0}, "mcc")["temperature"] == 3.0
    for method in ("source_only", "sidda", "dan", "deepjdot", "mcc"):  # all validate
        RunConfig.from_dict({"loss": method_loss(base, method)})


def test_options_left_at_the_base_default_take_the_variants_default():
    """A paper base config (every option filled in with the paper's defaults) yields robust
    runs with the robust defaults, and robust base configs yield paper runs with the paper's."""
    paper = RunConfig.from_dict({"loss": {"variant": "paper"}}).to_dict()["loss"]
    assert paper["eta_mode"] == "faithful" and paper["blur_factor"] == 0.05
    robust = RunConfig.from_dict({"loss": method_loss(paper, "sidda", variant="robust")}).loss
    assert robust.variant == "robust"
    assert (robust.eta_mode, robust.blur_factor) == ("clean", defaults("sidda", "robust")[
        "blur_factor"])
    back = method_loss(RunConfig.from_dict({"loss": {"variant": "robust"}}).to_dict()["loss"],
                       "sidda", variant="paper")
    assert RunConfig.from_dict({"loss": back}).loss.options == defaults("sidda", "paper")


def test_robust_variant_defaults_and_refuses_faithful_eta_updates():
    cfg = LossConfig(variant="robust")
    assert cfg.eta_mode == "clean" and cfg.blur_factor != OPTIONS["sidda"]["blur_factor"]
    assert LossConfig(variant="robust", blur_factor=0.05).blur_factor == 0.05  # set: kept
    with pytest.raises(ValueError, match="eta_mode must be 'clean' with variant robust"):
        LossConfig(variant="robust", eta_mode="faithful")


def test_parse_method_and_data():
    assert parse_method("sidda:robust")[1:] == ("sidda", "robust")
    assert parse_method("sidda").variant == "robust" and parse_method("dan").variant is None
    assert parse_method("sidda:robust").folder == "sidda-robust"
    with pytest.raises(ConfigError, match="unknown method 'sida'"):
        parse_method("sida")
    with pytest.raises(ConfigError, match="unknown variant 'fast'"):
        parse_method("sidda:fast")
    with pytest.raises(ConfigError, match="no variants"):
        parse_method("dan:robust")
    got = parse_data(["a=x/one", "x/two/"])
    assert {k: str(v) for k, v in got.items()} == {"a": "x/one", "two": "x/two"}
    with pytest.raises(ConfigError, match="given twice"):
        parse_data(["a=x", "a=y"])
    with pytest.raises(ConfigError, match="plain name"):
        parse_data(["a/b=x"])


def test_summary_statistics_and_gap_against_numpy():
    rng = np.random.default_rng(0)
    runs = []
    def dom():
        return {k: float(rng.uniform()) for k in ("accuracy", "ece", "brier")}

    for data in ("d1", "d2"):
        for method in ("source_only", "sidda", "sidda:robust"):
            for seed in (0, 1, 2):
                runs.append({"data": data, "method": method, "seed": seed,
                             "metrics": {"source": dom(), "target": dom()}})
    rows = summarize_compare(runs)
    assert [(r["data"], r["method"], r["n_seeds"]) for r in rows] == [
        (d, m, 3) for d in ("d1", "d2") for m in ("source_only", "sidda", "sidda:robust")]
    for row in rows:
        group = [r for r in runs if (r["data"], r["method"]) == (row["data"], row["method"])]
        for dom, key in DOMAIN_KEYS:
            vals = [r["metrics"][dom][key] for r in group]
            assert row[f"{dom}_{key}_mean"] == pytest.approx(np.mean(vals))
            assert row[f"{dom}_{key}_std"] == pytest.approx(np.std(vals, ddof=1))
        assert row["target_accuracy_per_seed"] == [r["metrics"]["target"]["accuracy"]
                                                   for r in group]
        so = next(r for r in rows if r["data"] == row["data"] and r["method"] == "source_only")
        want = (row["target_accuracy_mean"] - so["target_accuracy_mean"]) / (
            so["source_accuracy_mean"] - so["target_accuracy_mean"])
        if so["source_accuracy_mean"] > so["target_accuracy_mean"]:
            assert row["gap_closed"] == pytest.approx(want)
    assert gap_closed(0.8, 0.9, 0.5) == pytest.approx(0.75)
    assert gap_closed(0.8, 0.5, 0.5) is None  # no gap to close
    plan = {"data": {"d1": "p1", "d2": "p2"}, "seeds": [0, 1, 2], "model": "cnn",
            "checkpoint": "final"}
    md = format_markdown(rows, plan)
    assert md.count("| method | target acc (mean ± std) | per seed |") == 2
    assert "### d1 (`p1`)" in md and "Best on target:" in md
    assert summarize_compare([r for r in runs if r["method"] != "source_only"])[0][
        "gap_closed"] is None


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "source_only,sida"], "unknown method 'sida'"),
    (["--methods", "sidda:fast"], "unknown variant 'fast'"),
    (["--methods", "sidda,sidda:robust"], "the same method"),
    (["--seeds", "0,zero"], "--seeds takes comma-separated integers, e.g. 0,1,2"),
])
def test_bad_method_lists_exit_2_before_anything_is_written(tmp_path, tiny_data, capsys, args,
                                                             message):
    cfg = _config(tmp_path, tiny_data)
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(cfg), "--data", f"a={tiny_data}", "--out", str(out),
                 *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error:") and message in err[0]
    assert not out.exists()


@pytest.mark.parametrize(("data", "message"), [
    (["a={d}", "a={d}"], "given twice"),
    (["a={d}", "b={d}_missing"], "no such folder"),
    (["a/b={d}"], "plain name"),
])
def test_bad_data_exit_2_before_anything_is_written(tmp_path, tiny_data, capsys, data, message):
    cfg = _config(tmp_path, tiny_data)
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(cfg), "--data", *[d.format(d=tiny_data) for d in data],
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error:") and message in err[0]
    assert not out.exists()


def test_data_with_the_wrong_target_suffix_fails_before_training(tmp_path, tiny_data):
    cfg = RunConfig.from_yaml(_config(tmp_path, tiny_data)).override(
        ["data.target_suffix='_psf'"])
    with pytest.raises(ValueError, match="not found"):
        run_compare(cfg, data={"a": tiny_data}, methods=["source_only"], seeds=[0],
                    out=tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_compare_two_data_sets_three_methods_two_seeds(tmp_path, one_thread, capsys):
    from conftest import write_tiny_data

    d1 = write_tiny_data(tmp_path / "blobs", size=16, seed=0)
    d2 = write_tiny_data(tmp_path / "other", size=16, seed=1)
    cfg = _config(tmp_path, d1)
    out = tmp_path / "cmp"
    methods = ("source_only", "sidda:paper", "sidda")
    assert main(["compare", "--config", str(cfg), "--data", f"one={d1}", str(d2),
                 "--methods", ",".join(methods), "--seeds", "0,1", "--out", str(out),
                 "--no-report", "-q"]) == 0
    printed = capsys.readouterr().out
    folders = {"source_only": "source_only", "sidda:paper": "sidda-paper", "sidda": "sidda"}
    for data in ("one", "other"):
        assert sorted(p.name for p in (out / "runs" / data).iterdir()) == sorted(
            f"{f}_seed{s}" for f in folders.values() for s in (0, 1))
    # Each run's loss section: its method, variant, and only its own options of the base.
    run_cfg = lambda data, f, s: RunConfig.from_yaml(  # noqa: E731
        out / "runs" / data / f"{f}_seed{s}" / "config.yaml")
    assert run_cfg("one", "source_only", 0).loss.eta_mode is None
    assert run_cfg("one", "sidda-paper", 1).loss.variant == "paper"
    robust = run_cfg("other", "sidda", 1)  # the default variant
    assert (robust.loss.variant, robust.loss.eta_mode, robust.train.seed) == ("robust", "clean", 1)
    assert robust.data.path == str(d2) and robust.model.latent_dim == 16

    # compare.csv: one row per run, numbers equal to the runs' metrics.json.
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [(r["data"], r["method"], r["seed"]) for r in rows] == [
        (d, m, str(s)) for d in ("one", "other") for m in methods for s in (0, 1)]
    for r in rows:
        m = _metrics(out, r["data"], folders[r["method"]], r["seed"])
        for dom in ("source", "target"):
            for key in ("accuracy", "ece", "brier", "nll"):
                assert float(r[f"{dom}_{key}"]) == pytest.approx(m[dom][key], rel=1e-12)
        assert r["checkpoint"] == "final"

    # compare_summary.csv and compare.json: mean, sample std and the seeds, recomputed here.
    summary = list(csv.DictReader(open(out / "compare_summary.csv")))
    js = json.loads((out / "compare.json").read_text())
    assert len(summary) == len(js["rows"]) == 6
    md = (out / "compare.md").read_text()
    for srow, jrow in zip(summary, js["rows"], strict=True):
        assert (srow["data"], srow["method"]) == (jrow["data"], jrow["method"])
        reports = [_metrics(out, srow["data"], folders[srow["method"]], s) for s in (0, 1)]
        for dom, key in DOMAIN_KEYS:
            vals = [rep[dom][key] for rep in reports]
            for row in (jrow, {k: float(v) for k, v in srow.items() if k.endswith(("_mean",
                                                                                     "_std"))}):
                assert row[f"{dom}_{key}_mean"] == pytest.approx(np.mean(vals))
                assert row[f"{dom}_{key}_std"] == pytest.approx(np.std(vals, ddof=1))
        accs = [rep["target"]["accuracy"] for rep in reports]
        assert jrow["target_accuracy_per_seed"] == accs and jrow["n_seeds"] == 2
        assert [float(v) for v in srow["target_accuracy_per_seed"].split()] == accs
        cell = (f"| {srow['method']} | {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f} | "
                f"{accs[0]:.3f}, {accs[1]:.3f} |")
        assert cell in md
        so = [_metrics(out, srow["data"], "source_only", s) for s in (0, 1)]
        so_s = np.mean([r["source"]["accuracy"] for r in so])
        so_t = np.mean([r["target"]["accuracy"] for r in so])
        if so_s > so_t:
            assert jrow["gap_closed"] == pytest.approx((np.mean(accs) - so_t) / (so_s - so_t))
    for data in ("one", "other"):
        best = max((r for r in js["rows"] if r["data"] == data),
                   key=lambda r: r["target_accuracy_mean"])
        assert js["best_on_target"][data] == best["method"]
        assert f"Best on target: {best['method']} (" in md
    assert md.count("| method | target acc (mean ± std) |") == 2
    assert "### one (`" in md and "### other (`" in md
    text = (out / "compare.txt").read_text()
    assert text in printed and "target acc (mean ± std)" in text
    plan = json.loads((out / "compare_plan.json").read_text())
    assert plan["methods"] == list(methods) and plan["seeds"] == [0, 1]
    assert plan["data"] == {"one": str(d1), "other": str(d2)} and plan["model"] == "cnn"

    assert not (out / "report.html").exists()

    # A subset in the same folder reuses its runs (nothing retrained) and writes the report.
    final = out / "runs" / "other" / "sidda_seed0" / "checkpoints" / "final.pt"
    stamp = final.stat().st_mtime_ns
    res = run_compare(RunConfig.from_yaml(cfg), data={"other": d2},
                      methods=["source_only", "sidda"], seeds=[0], out=out)
    assert final.stat().st_mtime_ns == stamp
    assert res.rows[1]["target_accuracy_mean"] == _metrics(
        out, "other", "sidda", 0)["target"]["accuracy"]
    page = res.report.read_text()
    assert "<h2 id='compare'>Comparison: methods x data sets</h2>" in page
    assert page.count("alt='target accuracy per method on other'") == 1
    assert "data:image/png;base64," in page and "<td class=l>sidda</td>" in page


@pytest.mark.slow
def test_compare_resumes_where_it_stopped(tmp_path, tiny_data, one_thread, capsys):
    cfg = _config(tmp_path, tiny_data)
    out = tmp_path / "cmp"
    argv = ["compare", "--config", str(cfg), "--data", f"a={tiny_data}", "--methods",
            "source_only", "--seeds", "0,1", "--out", str(out), "--no-report", "-q"]
    assert main(argv) == 0
    first, second = (out / "runs" / "a" / f"source_only_seed{s}" for s in (0, 1))
    stamp = (first / "checkpoints" / "final.pt").stat().st_mtime_ns
    metrics_stamp = (first / "metrics.json").stat().st_mtime_ns
    old = json.loads((second / "metrics.json").read_text())

    # Killed during the second run's evaluation: only that evaluation is redone.
    (second / "metrics.json").unlink()
    trained = (second / "checkpoints" / "final.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert (first / "metrics.json").stat().st_mtime_ns == metrics_stamp
    assert (second / "checkpoints" / "final.pt").stat().st_mtime_ns == trained
    again = json.loads((second / "metrics.json").read_text())
    assert again["target"]["accuracy"] == old["target"]["accuracy"]

    # Killed after its last checkpoint but before summary.json: resumed, not retrained (its
    # last.pt says it finished); deleted: trained again.
    for cut in ("half", "gone"):
        if cut == "half":
            for f in ("summary.json", "metrics.json"):
                (second / f).unlink()
        else:
            shutil.rmtree(second)
        assert main(argv) == 0
        assert (first / "checkpoints" / "final.pt").stat().st_mtime_ns == stamp
        assert (first / "metrics.json").stat().st_mtime_ns == metrics_stamp
        assert (second / "metrics.json").is_file() and (second / "summary.json").is_file()
        now = (second / "checkpoints" / "final.pt").stat().st_mtime_ns
        assert (now == trained) is (cut == "half")
        trained = now
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [float(r["target_accuracy"]) for r in rows] == [
        json.loads((d / "metrics.json").read_text())["target"]["accuracy"]
        for d in (first, second)]

    # Another config in the same folder is refused (exit 2) unless --force.
    capsys.readouterr()
    assert main([*argv, "--set", "train.lr=0.5"]) == 2
    assert "different config" in capsys.readouterr().err


# --------------------------------------------------------------------------- domain_bn, adabn


def test_the_method_list_names_domain_statistics_per_method():
    spec = parse_method("dan+dbn")
    assert (spec.method, spec.variant, spec.domain_bn, spec.folder) == ("dan", None, True,
                                                                         "dan_dbn")
    spec = parse_method("sidda:robust-dbn")
    assert (spec.variant, spec.domain_bn, spec.folder) == ("robust", False,
                                                           "sidda-robust_nodbn")
    assert parse_method("sidda:paper+dbn").folder == "sidda-paper_dbn"
    assert parse_method("adabn").domain_bn is None and parse_method("dan").domain_bn is None
    # the same run spelled twice: the method's default made explicit
    assert parse_method("dan-dbn").key == parse_method("dan").key
    assert parse_method("sidda+dbn").key == parse_method("sidda:robust").key
    assert parse_method("dan+dbn").key != parse_method("dan").key
    for token, message in (("source_only+dbn", "no BatchNorm statistics per domain"),
                           ("adabn-dbn", "no BatchNorm statistics per domain"),
                           ("dan+bn", r"unknown method 'dan\+bn'")):
        with pytest.raises(ConfigError, match=message):
            parse_method(token)
    assert method_loss({"method": "sidda"}, "coral", domain_bn=True) == {
        "method": "coral", "domain_bn": True}


@pytest.mark.parametrize(("methods", "message"), [
    ("dan,dan-dbn", "the same method"),
    ("source_only+dbn", "no BatchNorm statistics per domain"),
])
def test_bad_domain_statistics_in_the_list_exit_2(tmp_path, tiny_data, capsys, methods,
                                                  message):
    cfg = _config(tmp_path, tiny_data)
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(cfg), "--data", f"a={tiny_data}", "--out", str(out),
                 "--methods", methods]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_compare_trains_a_method_with_and_without_domain_statistics(tmp_path, tiny_data,
                                                                   one_thread):
    cfg = RunConfig.from_yaml(_config(tmp_path, tiny_data))
    res = run_compare(cfg, data={"a": tiny_data}, methods=["coral", "coral+dbn", "adabn"],
                      seeds=[0], out=tmp_path / "cmp", report=False)
    runs = {p.name: p for p in res.runs}
    assert set(runs) == {"coral_seed0", "coral_dbn_seed0", "adabn_seed0"}
    for name, dbn in (("coral_seed0", False), ("coral_dbn_seed0", True)):
        assert RunConfig.from_yaml(runs[name] / "config.yaml").loss.domain_bn is dbn
        state = load_checkpoint(runs[name] / "checkpoints" / "final.pt")["loss"]
        assert any(k.startswith("domain_stats.") for k in state) is dbn
    assert [r["method"] for r in res.rows] == ["coral", "coral+dbn", "adabn"]
