"""The command line answers ``--help`` and argument errors without loading torch, escnn or
matplotlib; the checkpoint names it spells are the library's."""

import subprocess
import sys

from sidda.cli import parser
from test_imports import _env

HEAVY = ("torch", "escnn", "matplotlib", "numpy")

PARSE = """
import contextlib, io, sys
from sidda.cli import build_parser
p = build_parser()
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            p.parse_args(argv)
        except SystemExit as e:
            assert e.code in (0, 2), (argv, e.code)
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_help_and_argument_errors_import_nothing_heavy():
    argvs = [["--help"], ["train", "--help"], ["predict", "--help"], ["compare", "--help"],
             ["config", "new", "--help"], ["data", "show", "--help"], ["report", "--help"],
             ["train"], ["evaluate"], ["predict", "run"], ["frobnicate"],
             ["evaluate", "run", "--checkpoint", "bogus"], ["evaluate", "run"],
             ["compare", "--config", "c", "--data", "d", "--out", "o"]]
    res = subprocess.run([sys.executable, "-c", PARSE.format(argvs=argvs, heavy=HEAVY)],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "", f"parsing imported: {res.stdout.strip()}"


def test_the_sidda_command_prints_help_without_torch():
    code = ("import runpy, sys\nsys.argv = ['sidda', 'train', '--help']\ntry:\n"
            "    runpy.run_module('sidda', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint('torch' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=_env())
    assert "usage: sidda train" in res.stdout and res.stderr.strip() == "False"


def test_the_parsers_checkpoint_names_are_the_librarys():
    from sidda.evaluate import PICK_RULES, VALIDATORS
    from sidda.metrics import DEFAULT_VALIDATOR
    from sidda.runs import CHECKPOINTS, EPOCH_CHECKPOINT

    assert parser.CHECKPOINT_NAMES == CHECKPOINTS
    assert parser.RULE_NAMES == PICK_RULES == tuple(VALIDATORS)
    assert parser.DEFAULT_VALIDATOR == DEFAULT_VALIDATOR
    assert parser.EPOCH_NAME.pattern == EPOCH_CHECKPOINT.pattern


def test_a_bad_checkpoint_name_is_an_argument_error(capsys):
    from sidda.cli import main

    try:
        main(["evaluate", "somewhere", "--checkpoint", "../x"])
    except SystemExit as e:
        assert e.code == 2
    assert "unknown checkpoint" in capsys.readouterr().err
