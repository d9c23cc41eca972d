"""Where a run's metrics go besides the log lines: the loggers ``train.log`` lists.

* ``csv`` - ``history.csv`` (one row per epoch) and ``history_steps.csv`` (one per step). The
  training loop rewrites both, atomically, at the end of every epoch (and when it is stopped),
  so a run in progress can be read at any time; every run has them, since evaluation, reports
  and resuming read them. Listing ``csv`` says so; it needs no callback.
* ``tensorboard`` - :class:`TensorBoardLogger`, a training callback that writes TensorBoard
  event files to ``RUN/tensorboard/``: every step's numbers as ``step/<name>`` against the
  global step, every epoch's record (losses, validation, etas, seconds) as ``epoch/<name>``
  against the epoch (from 1), flushed at each epoch end. It needs the ``tensorboard`` package
  (``pip install 'sidda[tensorboard]'``); view with ``tensorboard --logdir RUN/tensorboard``.
  A resumed run adds a new event file: steps logged between the last checkpoint and the
  interruption appear twice.

:func:`check_loggers` says before anything is written whether the loggers can run;
:func:`open_loggers` makes the callbacks of a run (call ``close()`` on each at the end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidda.errors import InputError
from sidda.train.config import LOGGERS

__all__ = ["TENSORBOARD_DIR", "TensorBoardLogger", "check_loggers", "open_loggers"]

#: The folder of the TensorBoard event files inside a run directory.
TENSORBOARD_DIR = "tensorboard"


def _summary_writer() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or an :class:`InputError` with the fix."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError(
            "train.log lists tensorboard, but the tensorboard package is not installed; "
            "install it with pip install 'sidda[tensorboard]', or drop tensorboard from "
            "train.log"
        ) from None
    return SummaryWriter


def check_loggers(names: Sequence[str]) -> None:
    """Raise :class:`InputError` unless every logger in ``names`` can run here.

    >>> check_loggers(["csv"])
    """
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise InputError(f"train.log: unknown logger(s) {unknown}; choose from "
                         f"{', '.join(LOGGERS)}")
    if "tensorboard" in names:
        _summary_writer()


def _scalars(rec: dict, skip: frozenset) -> dict[str, float]:
    """The finite numbers of a record (bools and bookkeeping left out)."""
    return {k: float(v) for k, v in rec.items()
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}


class TensorBoardLogger:
    """A training callback (``cb(event, record)``) writing TensorBoard event files."""

    _STEP_SKIP = frozenset({"epoch", "step"})
    _EPOCH_SKIP = frozenset({"epoch"})

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer = _summary_writer()(log_dir=str(self.log_dir))

    def __call__(self, event: str, rec: dict) -> None:
        if event == "step":
            for key, value in _scalars(rec, self._STEP_SKIP).items():
                self.writer.add_scalar(f"step/{key}", value, int(rec["step"]))
        elif event == "epoch":
            for key, value in _scalars(rec, self._EPOCH_SKIP).items():
                self.writer.add_scalar(f"epoch/{key}", value, int(rec["epoch"]))
            self.writer.flush()

    def close(self) -> None:
        """Write what is buffered and close the event file."""
        self.writer.close()


def open_loggers(names: Sequence[str], run_dir: str | Path) -> list[TensorBoardLogger]:
    """The callbacks of the loggers in ``names`` for the run in ``run_dir`` (``csv`` needs
    none: the loop writes the histories)."""
    check_loggers(names)
    return [TensorBoardLogger(Path(run_dir) / TENSORBOARD_DIR)] if "tensorboard" in names else []
