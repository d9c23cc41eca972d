"""The progress line: never wider than the terminal allows, never glued to a log line."""

import io
import logging
import re

import pytest

from sidda import RunConfig
from sidda.cli.console import MAX_WIDTH, Progress, end_progress, line_width, setup_logging
from sidda.experiments import train_run

EXTREME = [
    {"epoch": 10**6, "step": 10**15, "phase": "a-very-long-phase-name-" * 4, "ce": 1234.5678,
     "da": 1e30},
    {"epoch": 0, "step": 0, "phase": "warmup", "ce": float("nan"), "da": float("-inf")},
    {"epoch": 3, "step": 123456789, "phase": "align", "ce": -1e-30, "da": None},
    {"epoch": 12, "step": 99999, "phase": "align", "ce": 1e300, "da": 1234.5678},
    {"epoch": 7, "step": 5, "phase": "", "ce": None, "da": 0.0},
]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _screen(text):
    """What a terminal shows for ``text``: ``\\r`` returns to column 0, characters overwrite."""
    rows, col = [[]], 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            rows.append([])
            col = 0
        else:
            row = rows[-1]
            if col < len(row):
                row[col] = ch
            else:
                row.append(ch)
            col += 1
    return ["".join(r).rstrip() for r in rows]


def _pieces(text):
    return re.split(r"[\r\n]", text)


@pytest.mark.parametrize("total", [2, 10**9])
def test_progress_lines_fit_79_columns_whatever_the_values(total):
    out = io.StringIO()
    progress = Progress(total, enabled=True, stream=out)
    progress.t0 -= 10**7  # a run of four months
    for rec in EXTREME:
        progress("step", rec)
        assert len(progress.line(rec)) <= MAX_WIDTH
    progress("epoch", {})
    assert max(len(p) for p in _pieces(out.getvalue())) <= MAX_WIDTH
    assert all(len(row) <= MAX_WIDTH for row in _screen(out.getvalue()))
    assert _screen(out.getvalue())[-1] == ""  # erased at the end of the epoch
    assert "1.23e+03" not in out.getvalue() and "1234.568" in out.getvalue()


def test_progress_shows_the_epoch_as_recorded():
    out = io.StringIO()
    Progress(5, enabled=True, stream=out)("step", {"epoch": 3, "step": 7, "phase": "align",
                                                    "ce": 0.5, "da": 0.25})
    assert out.getvalue().lstrip("\r").startswith("epoch 3/5 step 7 align")


def test_progress_follows_a_narrow_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    out = _Tty()
    assert line_width(out) == 49
    progress = Progress(10, enabled=True, stream=out)
    for rec in EXTREME:
        progress("step", rec)
    assert max(len(p) for p in _pieces(out.getvalue())) <= 49
    monkeypatch.setenv("COLUMNS", "200")
    assert line_width(out) == MAX_WIDTH
    assert line_width(io.StringIO()) == MAX_WIDTH  # not a terminal


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    progress = Progress(2, enabled=False, stream=out)
    progress("step", EXTREME[0])
    progress("epoch", {})
    assert out.getvalue() == ""


def test_a_log_line_erases_the_progress_line_first():
    out = io.StringIO()
    setup_logging(False, False, stream=out)
    try:
        progress = Progress(2, enabled=True, stream=out)
        progress("step", EXTREME[0])
        logging.getLogger("sidda.train").info("epoch 1/2 warmup  loss 0.5")
        progress("step", EXTREME[2])
        end_progress()  # as main does before it prints an error
        print("sidda: error: something", file=out)
    finally:
        setup_logging(False, False)
    rows = _screen(out.getvalue())
    assert rows == ["epoch 1/2 warmup  loss 0.5", "sidda: error: something", ""]


def test_training_epoch_summaries_start_on_their_own_lines(tmp_path, tiny_data):
    """A real run: every epoch summary is a row of its own, no progress fragment beside it."""
    out = io.StringIO()
    cfg = RunConfig.from_dict({
        "name": "r", "out_dir": str(tmp_path / "runs"), "data": {"path": str(tiny_data)},
        "model": {"name": "cnn"},
        "train": {"epochs": 3, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1},
    })
    setup_logging(False, False, stream=out)
    try:
        train_run(cfg, callbacks=[Progress(3, enabled=True, stream=out)])
    finally:
        setup_logging(False, False)
    text = out.getvalue()
    assert " step " in text  # the progress line was drawn
    summaries = [row for row in _screen(text) if "val_acc" in row]
    assert len(summaries) == 3
    assert all(row.startswith("epoch ") and " step " not in row for row in summaries)
    assert max(len(p) for p in _pieces(text) if " step " in p) <= MAX_WIDTH


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty, quiet, shown", [(True, False, True), (False, False, False),
                                                (True, True, False)])
def test_the_train_command_shows_progress_on_a_terminal_only(monkeypatch, tty, quiet, shown):
    import argparse

    from sidda.cli import commands

    stream = _Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    progress = commands._progress(5, argparse.Namespace(quiet=quiet))
    progress("step", {"epoch": 1, "step": 0, "phase": "warmup", "ce": 1.0})
    assert progress.enabled is shown and ("epoch 1/5 step 0" in stream.getvalue()) is shown
