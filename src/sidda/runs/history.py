"""A run's history: ``history.csv`` (one row per epoch) and ``history_steps.csv``, written
and read here only."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sidda.runs.files import write_csv

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ history

#: The per-epoch and per-step history files of a run.
HISTORY, HISTORY_STEPS = "history.csv", "history_steps.csv"


@dataclass
class History:
    """What a run logged: one dict per epoch and one per step.

    Written by training (:meth:`write`) and read back by evaluation, plots and reports
    (:meth:`read`, :func:`load_history`): the one place that knows the file names.
    """

    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    stopped_early: bool = False

    def write(self, run_dir: str | Path) -> None:
        """Write ``history.csv`` and ``history_steps.csv`` atomically."""
        write_csv(Path(run_dir) / HISTORY, self.epochs)
        write_csv(Path(run_dir) / HISTORY_STEPS, self.steps)

    @classmethod
    def read(cls, run_dir: str | Path) -> History:
        """The epochs and steps a run wrote (empty lists for absent files)."""
        run_dir = Path(run_dir)
        return cls(load_history(run_dir / HISTORY), load_history(run_dir / HISTORY_STEPS))


def load_history(path: str | Path) -> list[dict]:
    """Rows of ``history.csv`` (or ``history_steps.csv``): numbers as floats, blanks as None.

    Args:
        path: The CSV file, or a run directory (reads its ``history.csv``).

    Returns:
        One dict per row; an absent file gives ``[]``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for k, v in raw.items():
                if v is None or v == "":
                    row[k] = None
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            rows.append(row)
    return rows
