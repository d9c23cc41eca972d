"""Resuming, signals and non-finite steps: moved to :mod:`sidda.train.recovery`; this module
only re-exports it (``docs/recovery.md``)."""

from sidda.train.recovery import (
    Checkpointer,
    NonFiniteError,
    SignalCatcher,
    TrainingInterrupted,
    TrainState,
    count_bad_step,
    read_last,
    read_state,
    restore_rng,
    resume_path,
)

__all__ = [
    "Checkpointer",
    "NonFiniteError",
    "SignalCatcher",
    "TrainState",
    "TrainingInterrupted",
    "count_bad_step",
    "read_last",
    "read_state",
    "restore_rng",
    "resume_path",
]
