"""Whole experiments: train a run directory from a config, evaluate it, run the demo.

* :mod:`~sidda.experiments.data` - :func:`prepare_data` (the run's train/validation split),
  :func:`data_checksums`, :func:`write_generated` (a generated set as a data folder);
* :mod:`~sidda.experiments.rundir` - the run directory while it is set up (lock, setup files,
  rank 0's work under torchrun);
* :mod:`~sidda.experiments.training` - :func:`train_run`, :func:`resume_run`;
* :mod:`~sidda.experiments.evaluation` - :func:`load_run_model`, :func:`evaluate_run`,
  :func:`evaluate_runs`, :func:`evaluation_dir`, :func:`needs_evaluation`;
* :mod:`~sidda.experiments.demo` - :func:`run_demo`, what ``sidda demo`` runs.
"""

from sidda.experiments.data import data_checksums, prepare_data, write_generated
from sidda.experiments.demo import DEMO_METHODS, DemoResult, run_demo
from sidda.experiments.evaluation import (
    EVALUATION_ARRAYS,
    evaluate_run,
    evaluate_runs,
    evaluation_dir,
    load_run_model,
    needs_evaluation,
)
from sidda.experiments.training import resume_run, train_run

__all__ = [
    "DEMO_METHODS",
    "EVALUATION_ARRAYS",
    "DemoResult",
    "data_checksums",
    "evaluate_run",
    "evaluate_runs",
    "evaluation_dir",
    "load_run_model",
    "needs_evaluation",
    "prepare_data",
    "resume_run",
    "run_demo",
    "train_run",
    "write_generated",
]
