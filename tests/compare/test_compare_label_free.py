"""`sidda compare` without target labels (a ranking by a label-free validator) and with them
(how far each validator agrees with target accuracy), and its validator option."""

import csv
import html
import json
import shutil

import pytest

from conftest import write_config, write_tiny_data
from sidda.cli import main
from sidda.compare.page import compare_html
from sidda.evaluate.standings import label_free_ranking, ranked_by
from sidda.metrics import DEFAULT_VALIDATOR, validator_agreement


def _config(tmp_path, data):
    return write_config(tmp_path, data, name="x", out_dir=str(tmp_path / "ignored"),
                        model={"latent_dim": 16}, train={"batch_size": 8})


def _unlabelled_copy(data, dest):
    shutil.copytree(data, dest)
    for split in ("train", "test"):
        (dest / split / f"y_{split}_noise.npy").unlink()
    return dest


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error:"), err
    return err[0]


def test_compare_ranks_without_labels_and_measures_agreement_with_them(tmp_path, one_thread,
                                                                       capsys):
    lab = write_tiny_data(tmp_path / "lab")
    unl = _unlabelled_copy(lab, tmp_path / "unl")
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(_config(tmp_path, lab)), "--data", f"lab={lab}",
                 f"unl={unl}", "--methods", "source_only,sidda", "--seeds", "0", "--out",
                 str(out), "--no-report", "-q"]) == 0
    printed = capsys.readouterr().out
    js = json.loads((out / "compare.json").read_text())
    metrics = {(d, m): json.loads((out / "runs" / d / f"{m}_seed0" / "metrics.json").read_text())
               for d in ("lab", "unl") for m in ("source_only", "sidda")}

    # Without target labels: methods and runs ranked by the default validator, collapsed ones
    # after healthy ones.
    assert ranked_by(DEFAULT_VALIDATOR) in printed and "lab" not in js["ranking"]
    expected = label_free_ranking([
        {"name": m, "score": metrics[("unl", m)]["label_free"]["validators"][DEFAULT_VALIDATOR],
         "collapse": metrics[("unl", m)]["label_free"]["collapse"]["flag"]}
        for m in ("source_only", "sidda")])
    got = js["ranking"]["unl"]["groups"]
    assert [(e["name"], e["rank"]) for e in got] == [(e["name"], e["rank"]) for e in expected]
    md = (out / "compare.md").read_text()
    assert f"No target labels: methods {ranked_by(DEFAULT_VALIDATOR)}" in md
    assert f"| 1 | {expected[0]['name']} |" in md

    # With target labels: each validator's agreement, as validator_agreement computes it.
    direct = validator_agreement([
        {"name": f"{m} seed 0", "validators": metrics[("lab", m)]["label_free"]["validators"],
         "target_accuracy": metrics[("lab", m)]["target"]["accuracy"]}
        for m in ("source_only", "sidda")])
    assert js["agreement"] == {"lab": direct}
    assert "How far each label-free validator can be trusted here" in printed
    rows = list(csv.DictReader(open(out / "compare_agreement.csv")))
    assert [r["validator"] for r in rows] == list(direct["validators"])
    for r in rows:
        d = direct["validators"][r["validator"]]
        assert r["data"] == "lab" and r["default"] == str(r["validator"] == DEFAULT_VALIDATOR)
        for key in ("spearman", "weighted_spearman", "regret"):
            assert (float(r[key]) if r[key] else None) == pytest.approx(d[key])
    default = direct["validators"][DEFAULT_VALIDATOR]
    line = next(li for li in printed.splitlines()
                if li.strip().startswith(f"{DEFAULT_VALIDATOR}*"))
    assert f"{default['pick']} ({default['pick_accuracy']:.3f})" in line

    # The label-free columns of the tables and of compare.csv.
    runs = list(csv.DictReader(open(out / "compare.csv")))
    for r in runs:
        lf = metrics[(r["data"], r["method"])]["label_free"]
        assert float(r["validator_im"]) == pytest.approx(lf["validators"]["im"])
        assert r["collapse"] == str(lf["collapse"]["flag"])
    assert f"| collapse | {DEFAULT_VALIDATOR.upper()} | domain dist. |" in md
    assert "How far each label-free validator can be trusted here" in md

    # The report page shows the same tables (rebuilt here from compare.json).
    standing = {d: {"validator": DEFAULT_VALIDATOR, "ranking": js["ranking"].get(d),
                    "agreement": js["agreement"].get(d)} for d in ("lab", "unl")}
    page = compare_html(js["rows"], js["plan"], standing)
    assert html.escape(ranked_by(DEFAULT_VALIDATOR)) in page
    assert "<th>weighted Spearman</th>" in page
    assert f"<td class=l>{html.escape(expected[0]['name'])}</td>" in page


@pytest.mark.parametrize(("extra", "message"), [
    (["--validator", "accuracy"], "unknown validator 'accuracy'; choose from entropy, im"),
    (["--validator", "im"], "--validator im cannot score this data set (2 target images for "
                            "3 classes"),
])
def test_a_validator_that_cannot_rank_exits_2_before_anything_is_written(
        tmp_path, capsys, extra, message):
    data = write_tiny_data(tmp_path / "d", n_test=2)
    out = tmp_path / "cmp"
    assert main(["compare", "--config", str(_config(tmp_path, data)), "--data", f"d={data}",
                 "--methods", "source_only", "--out", str(out), *extra]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()
    assert main(["sweep", "--config", str(_config(tmp_path, data)), "--models", "cnn",
                 "--out", str(out), *extra]) == 2
    assert message.split(" cannot")[0].split(";")[0] in _one_error_line(capsys)
    assert not out.exists()
