"""What the report reads from each run directory, read once through :class:`~sidda.runs.RunDir`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from sidda.datasets import DataError, check_class_names
from sidda.runs import History, RunDir, RunInfo
from sidda.runs.rundir import DATA_MANIFEST

__all__ = ["ReportRun", "run_labels"]


class ReportRun(NamedTuple):
    """One run on the page: what :class:`~sidda.runs.RunDir` read from it, once."""

    dir: RunDir
    label: str
    metrics: dict
    info: RunInfo
    summary: dict
    manifest: dict
    config: str  #: the text of config.yaml
    history: History

    @classmethod
    def read(cls, run: RunDir, label: str, *, metrics: dict | None = None) -> ReportRun:
        """The run's files; ``metrics``: its ``metrics.json`` when already read."""
        metrics = run.metrics() if metrics is None else metrics
        return cls(run, label, metrics or {}, run.info(), run.summary() or {},
                   run.manifest(), run.config_text(), run.history())

    @property
    def anchor(self) -> str:
        return "run-" + "".join(c if c.isalnum() else "-" for c in self.label)

    @property
    def class_names(self) -> Sequence[str] | None:
        """``run.json``'s names, else ``data_manifest.json``'s when they are K distinct
        strings (a run from before those were checked may hold others), else None: the
        figures then label the classes by number."""
        if self.info.class_names:
            return self.info.class_names
        try:
            return check_class_names(self.manifest.get("class_names"), self.info.num_classes,
                                     where=self.dir.path / DATA_MANIFEST)
        except DataError:
            return None

    @property
    def config_dict(self) -> dict | None:
        """``config.yaml`` as plain data, or None when it does not parse as a mapping."""
        try:
            d = yaml.safe_load(self.config)
        except yaml.YAMLError:
            return None
        return d if isinstance(d, dict) else None

    @property
    def data_path(self) -> Path:
        """The data folder of the evaluation shown (``metrics.json``), else the training's."""
        path = self.metrics.get("data_path")
        return Path(path if isinstance(path, str) and path else self.info.data_path)

    def array(self, kind: str, domain: str) -> np.ndarray | None:
        return self.dir.array(kind, domain)


def run_labels(runs: Sequence[RunDir]) -> list[str]:
    """Run names, made unique with their parent folder where two runs share a name."""
    names = [r.name for r in runs]
    return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name
            for r in runs]
