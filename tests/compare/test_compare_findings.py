"""``sidda compare`` (and ``sweep``, ``demo``, ``evaluate``) on the inputs that used to waste a
run or mislead: escaped paths in compare.md, a checkpoint the runs will not keep, an interrupted
run, an --out that is a file, empty list items, runs of an earlier comparison left out."""

import os
import re
import shutil
import signal

import pytest

from conftest import write_config
from sidda import TrainingInterrupted
from sidda.cli import main
from sidda.compare import run_compare
from sidda.compare.tables import code_span


def _config(tmp_path, data, **train):
    return write_config(tmp_path, data, name="x", out_dir=str(tmp_path / "ignored"),
                        model={"latent_dim": 16}, train={"batch_size": 8, **train})


def _argv(cfg, data, out, *more):
    return ["compare", "--config", str(cfg), "--data", f"a={data}", "--methods", "source_only",
            "--seeds", "0", "--out", str(out), "--no-report", "-q", *more]


def _span_content(span):
    """What a CommonMark code span shows: the text between the opening fence and the first
    closing run of exactly as many backticks (one space stripped on each side)."""
    fence = re.match(r"`+", span).group()
    rest = span[len(fence):]
    close = next(m for m in re.finditer(r"`+", rest) if len(m.group()) == len(fence))
    inner = rest[: close.start()]
    if inner.startswith(" ") and inner.endswith(" ") and inner.strip():
        inner = inner[1:-1]
    return inner, rest[close.end():]


@pytest.mark.parametrize("text", ["data/a", "data_a`<img src=x onerror=alert(1)>`b",
                                  "``x```y", "`edge`", "a\nb"])
def test_code_spans_cannot_be_closed_by_their_text(text):
    span = code_span(text)
    inner, after = _span_content(span)
    assert inner == " ".join(text.splitlines()) and after == ""


def test_compare_md_keeps_a_hostile_path_inside_its_code_span(tmp_path, tiny_data, one_thread):
    data = tmp_path / "data_a`<img src=x onerror=alert(1)>`b"
    shutil.copytree(tiny_data, data)
    cfg = _config(tmp_path, data)
    assert main(_argv(cfg, data, tmp_path / "cmp")) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    (head,) = [line for line in md.splitlines() if line.startswith("### a (")]
    inner, after = _span_content(head[len("### a ("):])
    assert inner == str(data) and after == ")"


def test_an_epoch_checkpoint_the_runs_will_not_keep_is_refused_before_training(
        tmp_path, tiny_data, capsys):
    cfg = _config(tmp_path, tiny_data, epochs=6)
    out = tmp_path / "cmp"
    assert main(_argv(cfg, tiny_data, out, "--checkpoint", "epoch_0005")) == 2
    assert "keep no epoch checkpoints" in capsys.readouterr().err and not out.exists()
    assert main(_argv(cfg, tiny_data, out, "--checkpoint", "epoch_0009", "--set",
                      "train.keep_epoch_checkpoints=true")) == 2
    assert "1..6" in capsys.readouterr().err and not out.exists()


def test_an_interrupted_compare_resumes_its_run_when_rerun(tmp_path, tiny_data, one_thread,
                                                            capsys):
    cfg = _config(tmp_path, tiny_data, epochs=3)
    out = tmp_path / "cmp"

    def sigterm_at_epoch_2(event, rec):
        if event == "step" and rec["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    from sidda.config import RunConfig

    with pytest.raises(TrainingInterrupted) as e:
        run_compare(RunConfig.from_yaml(cfg), data={"a": tiny_data}, methods=["source_only"],
                    seeds=[0], out=out, report=False, callbacks=[sigterm_at_epoch_2])
    assert "rerun the same sidda compare command" in str(e.value)
    assert "sidda train --resume" not in str(e.value) and e.value.exit_status == 143
    run = out / "runs" / "a" / "source_only_seed0"
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "summary.json").exists()
    capsys.readouterr()
    assert main(_argv(cfg, tiny_data, out)[:-1]) == 0  # without -q: the log says what it did
    err = capsys.readouterr().err
    assert "interrupted earlier, resuming it" in err and "resuming" in err
    assert "at epoch 2/3" in err  # from its last.pt, not from epoch 1
    assert (run / "metrics.json").is_file()


def test_an_out_that_is_a_file_exits_2(tmp_path, tiny_data, capsys):
    cfg = _config(tmp_path, tiny_data)
    afile = tmp_path / "base.yaml"
    afile.write_text("keep")
    assert main(_argv(cfg, tiny_data, afile)) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert main(["demo", "--out", str(afile), "-q"]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert afile.read_text() == "keep"


def test_a_file_where_a_run_folder_belongs_exits_2(tmp_path, tiny_data, capsys):
    cfg = _config(tmp_path, tiny_data)
    out = tmp_path / "cmp"
    (out / "runs" / "a").mkdir(parents=True)
    (out / "runs" / "a" / "source_only_seed0").write_text("not a run")
    assert main(_argv(cfg, tiny_data, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file where this run's folder belongs" in err[0]


@pytest.mark.parametrize("seeds", ["1,,2", "0,", ","])
def test_empty_seed_items_are_refused(tmp_path, tiny_data, capsys, seeds):
    cfg = _config(tmp_path, tiny_data)
    argv = _argv(cfg, tiny_data, tmp_path / "cmp")
    argv[argv.index("--seeds") + 1] = seeds
    assert main(argv) == 2
    assert "--seeds takes comma-separated integers without empty items" in (
        capsys.readouterr().err)
    assert not (tmp_path / "cmp").exists()


def test_a_rerun_with_fewer_seeds_names_the_runs_it_leaves_out(tmp_path, tiny_data, one_thread,
                                                                capsys):
    cfg = _config(tmp_path, tiny_data, epochs=2)
    out = tmp_path / "cmp"
    argv = _argv(cfg, tiny_data, out)
    argv[argv.index("--seeds") + 1] = "0,1"
    assert main(argv) == 0
    capsys.readouterr()
    assert main(_argv(cfg, tiny_data, out)) == 0
    err = capsys.readouterr().err
    assert "1 run(s) of an earlier comparison" in err and "a/source_only/seed 1" in err
    md = (out / "compare.md").read_text()
    assert "seeds 0." in md and (out / "runs" / "a" / "source_only_seed1").is_dir()


def test_a_rule_on_a_run_without_checkpoints_says_so(tmp_path, tiny_data, capsys):
    cfg = write_config(tmp_path, tiny_data, name="r")
    assert main(["train", "-q", "--config", str(cfg)]) == 0
    run = tmp_path / "runs" / "r"
    for f in (run / "checkpoints").iterdir():
        f.unlink()
    assert main(["evaluate", str(run), "--checkpoint", "entropy"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoints" in err and "validation images" not in err


def test_a_reused_run_with_a_damaged_checkpoint_says_how_to_train_it_again(
        tmp_path, tiny_data, one_thread, capsys):
    cfg = _config(tmp_path, tiny_data)
    out = tmp_path / "cmp"
    assert main(_argv(cfg, tiny_data, out)) == 0
    run = out / "runs" / "a" / "source_only_seed0"
    (run / "metrics.json").unlink()  # evaluated again on the rerun: final.pt is read
    final = run / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[:-100])
    capsys.readouterr()
    assert main(_argv(cfg, tiny_data, out)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sidda:")]
    assert len(err) == 1 and err[0].startswith(f"sidda: error: {final}: damaged checkpoint")
    assert err[0].endswith(f"delete {run} to train that run again, or pass --force to train "
                           "every run again")
    assert main([*_argv(cfg, tiny_data, out), "--force"]) == 0
    assert (run / "metrics.json").is_file()
