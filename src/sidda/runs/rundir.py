"""The run directory: every file name of a run and its lifecycle (``run.json``'s schema,
:class:`RunInfo`, is :mod:`sidda.runs.info`'s).

A run directory passes through five states (:class:`RunState`); each begins when a file is
written::

    ABSENT      no run here: no folder, or a folder holding files that are not a run's
    SETTING_UP  setup files only, or nothing yet (config.yaml, argv.txt, environment.json,
                data_manifest.json, the lock): a setup killed or failed before run.json
    SET_UP      run.json (written last by the setup): training started, maybe interrupted
    TRAINED     summary.json (written when training ends)
    EVALUATED   metrics.json and the per-image arrays of the run's own data, complete

:class:`RunDir` is the one reader and writer of these files. It handles plain data (dicts,
arrays, text, :class:`~sidda.runs.History`); the modules above it build configs, models and
predictions. Every reader names the file it could not use: a file that no longer parses raises
:class:`DamagedFileError` (``FILE: damaged (...)`` and what to do), an input error.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sidda.errors import InputError, one_line, short_repr
from sidda.metrics.calibration import MAX_BINS
from sidda.runs.checkpoints import (
    check_checkpoint_name,
    checkpoint_path,
    load_checkpoint,
    model_checkpoints,
)
from sidda.runs.files import (
    atomic_write,
    json_text,
    npy_problem,
    publish_files,
    read_regular,
    write_json,
)
from sidda.runs.history import HISTORY, HISTORY_STEPS, History, load_history
from sidda.runs.info import RunInfo
from sidda.runs.lock import LOCK_NAME, lock_run

__all__ = ["ARGV", "CONFIG", "DATA_MANIFEST", "DOMAINS", "DamagedFileError", "ENVIRONMENT",
           "EVALUATION_ARRAYS", "INFO", "METRICS", "PREDICTION_FILES", "RunDir", "RunInfo",
           "RunState", "SETUP_FILES", "SUMMARY"]

CONFIG, ARGV = "config.yaml", "argv.txt"
ENVIRONMENT, DATA_MANIFEST = "environment.json", "data_manifest.json"
INFO, SUMMARY, METRICS = "run.json", "summary.json", "metrics.json"
#: What a run directory holds before ``run.json`` (in the order the setup writes it).
SETUP_FILES = (LOCK_NAME, CONFIG, ARGV, ENVIRONMENT, DATA_MANIFEST)
#: The two domains of an evaluation, and the per-image arrays it writes for each.
DOMAINS = ("source", "target")
PREDICTION_FILES = tuple(f"{k}_{d}.npy" for k in ("logits", "probs", "latents", "labels")
                         for d in DOMAINS)
#: The arrays a complete evaluation holds for both domains (``labels`` only when labelled).
EVALUATION_ARRAYS = ("logits", "latents", "probs")
_EVAL, _STAGING = "eval", ".evaluation-staging"
_RETRAIN = "restore it from a backup, or train the run again (sidda train --config ... --force)"
_REEVALUATE = "evaluate the run again (sidda evaluate)"


class RunState(enum.IntEnum):
    """How far a run directory got (module docstring); states compare in lifecycle order."""

    ABSENT = 0
    SETTING_UP = 1
    SET_UP = 2
    TRAINED = 3
    EVALUATED = 4


class DamagedFileError(InputError):
    """A run file that no longer reads (cut, edited, not what sidda wrote).

    >>> str(DamagedFileError(Path("r/run.json"), "not JSON", "train the run again"))
    'r/run.json: damaged (not JSON); train the run again'
    """

    def __init__(self, path: Path, reason: str, hint: str) -> None:
        super().__init__(f"{path}: damaged ({reason}); {hint}")
        self.path, self.reason = path, reason


class RunDir:
    """A run directory (module docstring): its state, and one reader and writer per file.

    >>> RunDir("runs/a").state
    <RunState.ABSENT: 0>
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)  #: the folder

    @classmethod
    def of(cls, run: RunDir | str | Path) -> RunDir:
        """``run`` itself, or the run directory at that path."""
        return run if isinstance(run, RunDir) else cls(run)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    name = property(lambda self: self.path.name, doc="The folder's name.")
    config_path = property(lambda self: self.path / CONFIG, doc="``config.yaml``.")
    metrics_path = property(lambda self: self.path / METRICS, doc="``metrics.json``.")

    # ------------------------------------------------------------------------- lifecycle

    @property
    def state(self) -> RunState:
        """Where the run is in its lifecycle (module docstring)."""
        return self.state_up_to(RunState.EVALUATED)

    def state_up_to(self, last: RunState) -> RunState:
        """:attr:`state`, looking no further than ``last``: a run past it reports ``last``,
        and what only a later state needs is not read (below EVALUATED, ``metrics.json`` and
        the arrays are never opened).

        >>> RunDir("runs/a").state_up_to(RunState.SET_UP)
        <RunState.ABSENT: 0>
        """
        if not self.path.is_dir():
            return RunState.ABSENT
        if (self.path / INFO).is_file():
            if last <= RunState.SET_UP or not (self.path / SUMMARY).is_file():
                return min(RunState.SET_UP, last)
            if last <= RunState.TRAINED:
                return RunState.TRAINED
            return RunState.TRAINED if self.evaluation() is None else RunState.EVALUATED
        if all(p.name in SETUP_FILES or (p.name.startswith(".") and ".tmp" in p.name)
               for p in self.path.iterdir()):
            return min(RunState.SETTING_UP, last)
        return RunState.ABSENT  # someone else's files: not a run

    def require(self, at_least: RunState = RunState.SET_UP) -> None:
        """Raise :class:`FileNotFoundError` unless the run got as far as ``at_least``.

        ``SETTING_UP`` asks for ``config.yaml`` (what ``--resume`` needs), ``SET_UP`` and
        ``TRAINED`` for ``run.json``, ``EVALUATED`` for a complete evaluation.
        """
        if at_least >= RunState.EVALUATED:
            self.require_evaluation()
            return
        need = CONFIG if at_least <= RunState.SETTING_UP else INFO
        if not (self.path / need).is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no {need}); train one "
                                    "with `sidda train --config ...`")

    def write_setup(self, config_yaml: str, info: RunInfo, *, environment: dict,
                    manifest: dict, argv: Sequence[str]) -> None:
        """The files of a new run in :data:`SETUP_FILES` order, ``run.json`` last."""
        atomic_write(self.config_path, config_yaml)
        atomic_write(self.path / ARGV, " ".join(argv) + "\n")
        write_json(self.path / ENVIRONMENT, environment)
        write_json(self.path / DATA_MANIFEST, manifest)
        write_json(self.path / INFO, info.to_json())

    def complete_setup(self, info: RunInfo, *, environment: dict, manifest: dict,
                       argv: Sequence[str]) -> None:
        """Before a resume: drop half-written files, add ``argv``, write what setup lacks.

        A run killed during its setup (no ``run.json``) starts again: all three files anew.
        """
        for stale in [*self.path.glob(".*.tmp*"), *self.path.glob("checkpoints/.*.tmp*")]:
            stale.unlink()  # a write that SIGKILL cut short; the complete file is in place
        fresh = not (self.path / INFO).is_file()
        self.append_argv(argv)
        for name, obj in ((ENVIRONMENT, environment), (DATA_MANIFEST, manifest)):
            if fresh or not (self.path / name).is_file():
                write_json(self.path / name, obj)
        if fresh:
            write_json(self.path / INFO, info.to_json())

    def append_argv(self, argv: Sequence[str]) -> None:
        """Add a command line to ``argv.txt`` (rewritten atomically, never through a link)."""
        path, old = self.path / ARGV, b""
        with contextlib.suppress(FileNotFoundError):
            old = read_regular(path)
        atomic_write(path, old + (" ".join(argv) + "\n").encode())

    def clear(self) -> None:
        """Remove everything but the lock file (held by this process)."""
        for p in self.path.iterdir():
            if p.name == LOCK_NAME:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def lock(self, what: str) -> contextlib.AbstractContextManager:
        """:func:`~sidda.runs.lock_run` on this directory."""
        return lock_run(self.path, what=what)

    # ------------------------------------------------------------------ training records

    def damaged(self, name: str, reason: str) -> DamagedFileError:
        """The error for file ``name`` of this run, with what to do about it."""
        hint = _REEVALUATE if name == METRICS or name.endswith(".npy") else _RETRAIN
        return DamagedFileError(self.path / name, reason, hint)

    def _json(self, name: str) -> dict | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise self.damaged(name, f"not JSON: {one_line(e, limit=200)}") from None
        if not isinstance(obj, dict):
            raise self.damaged(name, f"holds a JSON {type(obj).__name__}, not an object")
        return obj

    def info(self) -> RunInfo:
        """``run.json``."""
        self.require(RunState.SET_UP)
        d = self._json(INFO)
        try:
            return RunInfo.from_json(d)
        except ValueError as e:
            raise self.damaged(INFO, str(e)) from None

    def config_text(self) -> str:
        """``config.yaml`` as written (``""`` when there is none)."""
        try:
            return self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except UnicodeDecodeError as e:
            raise self.damaged(CONFIG, f"not UTF-8 text: {e.reason} at byte {e.start}") from None

    def environment(self) -> dict | None:
        """``environment.json`` (versions, seed, data checksums), or None."""
        return self._json(ENVIRONMENT)

    def manifest(self) -> dict:
        """``data_manifest.json``, the data folder's manifest when training started (or {})."""
        return self._json(DATA_MANIFEST) or {}

    def summary(self) -> dict | None:
        """``summary.json``, written when training ends, or None."""
        return self._json(SUMMARY)

    def write_summary(self, hist: History) -> None:
        """``summary.json``: best epochs, early stop, epochs, seconds, skipped steps, last
        record."""
        write_json(self.path / SUMMARY, {
            "best_epochs": hist.best, "stopped_early": hist.stopped_early,
            "epochs_run": len(hist.epochs), "seconds": sum(e["seconds"] for e in hist.epochs),
            "skipped_steps": sum(e.get("skipped_steps", 0) for e in hist.epochs),
            "final": hist.epochs[-1],
        })

    def history(self) -> History:
        """``history.csv`` and ``history_steps.csv`` (empty lists for absent files)."""
        rows = []
        for name in (HISTORY, HISTORY_STEPS):
            try:
                rows.append(load_history(self.path / name))
            except (UnicodeDecodeError, csv.Error) as e:
                raise self.damaged(name, f"not CSV text: {one_line(e, limit=200)}") from None
        return History(*rows)

    def checkpoint(self, name: str) -> Path:
        """The file of model checkpoint ``name`` (:func:`~sidda.runs.checkpoint_path`)."""
        return checkpoint_path(self.path, name)

    def checkpoints(self) -> list[str]:
        """The saved model checkpoints (:func:`~sidda.runs.model_checkpoints`)."""
        return model_checkpoints(self.path)

    def load_checkpoint(self, name: str) -> dict:
        """Checkpoint ``name`` after its checksum check (:func:`~sidda.runs.load_checkpoint`)."""
        return load_checkpoint(self.checkpoint(name))

    # ------------------------------------------------------------------------ evaluation

    def metrics(self) -> dict | None:
        """``metrics.json`` (:mod:`sidda.experiments.evaluation` writes it), or None."""
        m = self._json(METRICS)
        if m is not None and (problem := _metrics_problem(m)):
            raise self.damaged(METRICS, problem)
        return m

    def array(self, kind: str, domain: str) -> np.ndarray | None:
        """The per-image array ``<kind>_<domain>.npy`` of the evaluation, or None."""
        name = f"{kind}_{domain}.npy"
        path = self.path / name
        if not path.is_file():
            return None
        if problem := npy_problem(path):
            raise self.damaged(name, problem)
        return np.load(path, allow_pickle=False)

    def evaluation(self) -> dict | None:
        """``metrics.json``, read once, when the evaluation is complete: the file (with
        temperature, selection, the label-free diagnostics and 1..MAX_BINS bins) and the
        :data:`EVALUATION_ARRAYS` of both domains are there and readable. None otherwise
        (missing, damaged, or incomplete: an evaluation by an older sidda, without
        ``label_free``, is incomplete)."""
        try:
            m = self.metrics()
        except DamagedFileError:
            return None
        if m is None or any(k not in m for k in ("selection", "temperature", "label_free")):
            return None
        bins = m.get("n_bins", 15)
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
            return None  # e.g. written by an older sidda with --bins 100000000
        for name in PREDICTION_FILES:
            path = self.path / name
            if (path.is_file() and npy_problem(path)) or (
                    not path.is_file() and name.split("_")[0] in EVALUATION_ARRAYS):
                return None
        return m

    def needs_evaluation(self) -> bool:
        """True unless the evaluation is complete (:meth:`evaluation`)."""
        return self.evaluation() is None

    def require_evaluation(self) -> dict:
        """The complete evaluation's ``metrics.json`` (:meth:`evaluation`).

        Raises:
            FileNotFoundError: none, or an incomplete one (the message says to evaluate).
        """
        m = self.evaluation()
        if m is None:
            raise FileNotFoundError(
                f"{self.path}: no complete evaluation (no {METRICS}, or an incomplete one); run "
                f"`sidda evaluate {self.path}` first")
        return m

    def temperature(self, checkpoint: str | None = None) -> float | None:
        """The temperature T the last evaluation fitted on the source validation split; None
        when there is none, or it belongs to another checkpoint than ``checkpoint``."""
        m = self.metrics()
        if m is None or (checkpoint is not None and m.get("checkpoint", "final") != checkpoint):
            return None
        value = (m.get("temperature") or {}).get("value")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0):
            raise self.damaged(METRICS, f"temperature {short_repr(value)} is not a number > 0")
        return float(value)

    def pick(self, rule: str) -> str | None:
        """The checkpoint label-free ``rule`` picked in the last evaluation, or None."""
        entry = (((self.metrics() or {}).get("selection") or {}).get("rules") or {}).get(rule)
        return None if entry is None else entry["checkpoint"]

    def eval_dir(self, data_path: str | Path | None) -> RunDir:
        """Where an evaluation goes: here for the run's own data (None, or ``run.json``'s
        folder), else ``eval/<folder name>-<hash of its path>``, one folder per data folder.

        >>> RunDir("runs/a").eval_dir("/data/test")
        RunDir('runs/a/eval/test-e55f6afe')
        """
        if data_path is None:
            return self
        other = Path(data_path).resolve()
        with contextlib.suppress(ValueError, OSError):
            if str(other) == (self._json(INFO) or {}).get("data_path"):
                return self
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in other.name).lstrip(".")
        digest = hashlib.sha256(os.fsencode(other)).hexdigest()[:8]
        return RunDir(self.path / _EVAL / f"{name or 'data'}-{digest}")

    def publish_evaluation(self, report: dict, arrays: Mapping[str, Mapping[str, np.ndarray]],
                           *, own_folder: bool) -> Path:
        """Write one evaluation (``metrics.json``, ``arrays[domain][kind]``) as a whole.

        ``own_folder`` (e.g. ``RUN/eval/<data>``): the folder is swapped in whole. The run
        directory itself: ``metrics.json`` goes last and arrays the new evaluation lacks
        (``labels_target.npy`` of an unlabelled target) are removed, so that a
        ``metrics.json`` always describes the arrays beside it; a kill in between leaves none
        (:func:`~sidda.runs.files.publish_files`). Returns the new ``metrics.json``.
        """
        files: dict = {f"{kind}_{domain}.npy": (lambda f, a=arr: np.save(f, a))
                       for domain, kinds in arrays.items() for kind, arr in kinds.items()}
        files[METRICS] = json_text(report)
        return publish_files(self.path, files, last=METRICS, own_folder=own_folder,
                             staging=_STAGING, remove=PREDICTION_FILES)


def _metrics_problem(m: dict) -> str | None:
    """What makes ``metrics.json`` unusable (a part of the wrong type), or None."""
    parts = {k: m.get(k) for k in ("source", "target", "temperature", "selection", "label_free")}
    sel = parts["selection"] if isinstance(parts["selection"], dict) else {}
    for part in ("rules", "candidates"):
        parts[f"selection.{part}"] = sel.get(part)
        entries = sel.get(part) if isinstance(sel.get(part), dict) else {}
        parts.update({f"selection.{part}.{k}": v for k, v in entries.items()})
    for key, value in parts.items():
        if value is not None and not isinstance(value, dict):
            return f"{key} is {short_repr(value)}, not an object"
    for rule, entry in (sel.get("rules") or {}).items():
        try:
            check_checkpoint_name(entry.get("checkpoint"))
        except InputError:
            return f"selection.rules.{rule}.checkpoint is {short_repr(entry.get('checkpoint'))}"
    return None
