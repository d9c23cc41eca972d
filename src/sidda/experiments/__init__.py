"""Whole experiments: train a run directory from a config, evaluate it, run the demo.

* :mod:`~sidda.experiments.data` - :func:`prepare_data` (the run's train/validation split),
  :func:`data_checksums`, :func:`write_generated` (a generated set as a data folder);
* :mod:`~sidda.experiments.training` - :func:`train_run`, :func:`resume_run`,
  :func:`run_config` (a run's ``config.yaml``), rank 0's work under torchrun;
* :mod:`~sidda.experiments.evaluation` - :class:`TrainedRun` (a run read once),
  :func:`load_run_model`, :func:`evaluate_run`, :func:`evaluate_runs`, :func:`evaluation_dir`;
  :mod:`~sidda.experiments.evaluation_data` - which images an evaluation reads, and from which
  folder;
* :mod:`~sidda.experiments.prediction` - :func:`predict_run` (``sidda predict``);
* :mod:`~sidda.experiments.demo` - :func:`run_demo`, what ``sidda demo`` runs.

The files of a run directory are read and written by :class:`sidda.runs.RunDir`.
"""

from sidda.experiments.data import data_checksums, prepare_data, write_generated
from sidda.experiments.demo import DEMO_METHODS, DemoResult, run_demo
from sidda.experiments.evaluation import (
    TrainedRun,
    evaluate_run,
    evaluate_runs,
    evaluation_dir,
    load_run_model,
)
from sidda.experiments.training import resume_run, run_config, train_run

__all__ = [
    "DEMO_METHODS",
    "DemoResult",
    "TrainedRun",
    "data_checksums",
    "evaluate_run",
    "evaluate_runs",
    "evaluation_dir",
    "load_run_model",
    "prepare_data",
    "resume_run",
    "run_config",
    "run_demo",
    "train_run",
    "write_generated",
]
