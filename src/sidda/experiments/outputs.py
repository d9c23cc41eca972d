"""Files a command writes where the user says (``predict --out``, ``report --out``): checked
before any work, so that a mistyped path never replaces something of value.

:func:`check_out_file` refuses, unless ``force``, to replace

* one of the command's input files (``predict RUN x.npy --out x.npy``),
* a file inside a run directory (its checkpoints, configs, histories: a run is sidda's record
  of itself; a new file there is fine),
* any existing file that is not one the command could have written: a predictions CSV for
  ``predict`` (its header starts ``name,predicted,confidence``), an HTML page for ``report``;

and refuses a folder in any case. It creates the missing parent folders of ``out``, so the
command fails on a bad path before it predicts or renders, not after.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sidda.errors import InputError
from sidda.runs import RunDir, RunState

__all__ = ["OUT_KINDS", "check_out_file", "enclosing_run"]

#: What each kind of output file starts with when a sidda command wrote it.
OUT_KINDS = {"csv": (b"name,predicted,confidence",), "html": (b"<!doctype html",)}


def enclosing_run(path: str | Path) -> RunDir | None:
    """The run directory that holds ``path`` (at any depth), or None.

    >>> enclosing_run("/no/such/run/preds.csv") is None
    True
    """
    for folder in Path(path).resolve().parents:
        if RunDir(folder).state_up_to(RunState.SETTING_UP) != RunState.ABSENT:
            return RunDir(folder)
    return None


def _looks_ours(path: Path, kind: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(64).lstrip().lower()
    return head.startswith(OUT_KINDS[kind])


def check_out_file(out: str | Path, *, kind: str, inputs: Iterable[str | Path] = (),
                   force: bool = False) -> Path:
    """``out`` once it is safe to write (module docstring); its parent folders exist after.

    Args:
        out: The file the command will write.
        kind: ``"csv"`` (predictions) or ``"html"`` (a report).
        inputs: Files and folders the command reads; ``out`` may be none of them, nor lie
            inside an input folder.
        force: Replace an existing file all the same (never a folder).

    Raises:
        InputError: ``out`` is a folder, or a file the rules protect (the message names the
            rule and says to pass ``--force`` or choose another name).
    """
    out = Path(out)
    if kind not in OUT_KINDS:
        raise ValueError(f"kind must be one of {sorted(OUT_KINDS)}, got {kind!r}")
    if out.is_dir():
        example = out / ("preds.csv" if kind == "csv" else "report.html")
        raise InputError(f"--out {out} is a folder; give a file name, e.g. {example}")
    if out.exists() and not force:
        target = out.resolve()
        for item in map(Path, inputs):
            item = item.resolve()
            if target == item or item in target.parents:
                raise InputError(f"--out {out} is an input of this command ({item}); choose "
                                 "another file name")
        run = enclosing_run(out)
        if run is not None:
            raise InputError(f"--out {out} is a file of the run directory {run.path}; choose "
                             "a name outside it, or pass --force to replace it")
        if not out.is_file() or not _looks_ours(out, kind):
            what = "a predictions CSV" if kind == "csv" else "an HTML report"
            raise InputError(f"--out {out} exists and is not {what} sidda wrote; choose "
                             "another file name, or pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"--out {out}: a part of {out.parent} is a file, not a folder; choose "
                         "another path") from None
    return out
