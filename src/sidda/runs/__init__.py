"""Run directories: atomic writes, checkpoints, histories, and what a run records about itself.

:mod:`~sidda.runs.rundir` (:class:`RunDir`: every file of a run, its lifecycle
:class:`RunState`), :mod:`~sidda.runs.info` (``run.json``'s :class:`RunInfo`),
:mod:`~sidda.runs.files` (atomic writes of files and folders, JSON, CSV),
:mod:`~sidda.runs.checkpoints`, :mod:`~sidda.runs.history`, :mod:`~sidda.runs.lock` (the run
lock and the environment record).

A run is a self-describing folder::

    runs/<name>/
        config.yaml          the resolved RunConfig
        argv.txt             the command line that made it (and one line per resume)
        environment.json     package versions, device, seed, data checksums
        data_manifest.json   the data folder's manifest (how the data was made)
        run.json             model shape, data sizes, source class counts; written last
        history.csv          one row per epoch (true per-epoch means)
        history_steps.csv    one row per optimisation step
        checkpoints/{final,best_val_acc,best_val_loss}.pt   models
        checkpoints/epoch_0007.pt  every epoch's model, with train.keep_epoch_checkpoints
        checkpoints/last.pt  everything `sidda train --resume` needs
        metrics.json         written by `sidda evaluate`, with the per-image *.npy arrays
        eval/<data>-<hash>/  `sidda evaluate --data OTHER`: the same files, one folder per data
        .lock                locked by the process that trains or evaluates (lock_run)

Every file is written atomically (temporary file in the same folder, fsync, rename), so a
kill at any instant leaves the previous complete version in place; a failed write (full disk,
a path that is not a folder) raises :class:`OSError` naming the file and leaves no temporary
file behind. Checkpoints carry the SHA-256 of their bytes (:func:`save_checkpoint`), checked
when they are loaded (:func:`load_checkpoint`), and hold tensors and plain data only: loading
one never runs code (a file that names other Python objects is refused with
:class:`UnsafeCheckpointError`; :func:`upgrade_run` converts the checkpoints of an older sidda).
"""

from sidda.runs.checkpoints import (
    CHECKPOINT_MAGIC,
    CHECKPOINTS,
    EPOCH_CHECKPOINT,
    RESUME_CHECKPOINT,
    DamagedCheckpointError,
    UnsafeCheckpointError,
    check_checkpoint_name,
    checkpoint_path,
    load_checkpoint,
    model_checkpoints,
    save_checkpoint,
)
from sidda.runs.files import (
    atomic_dir,
    atomic_write,
    check_new_folder,
    fsync_dir,
    write_csv,
    write_json,
)
from sidda.runs.history import HISTORY, HISTORY_STEPS, History, load_history
from sidda.runs.lock import LOCK_NAME, environment_info, lock_run
from sidda.runs.rundir import (
    PREDICTION_FILES,
    DamagedFileError,
    RunDir,
    RunInfo,
    RunState,
)
from sidda.runs.upgrade import upgrade_run

__all__ = [
    "CHECKPOINTS",
    "CHECKPOINT_MAGIC",
    "EPOCH_CHECKPOINT",
    "HISTORY",
    "HISTORY_STEPS",
    "History",
    "LOCK_NAME",
    "PREDICTION_FILES",
    "RESUME_CHECKPOINT",
    "DamagedCheckpointError",
    "DamagedFileError",
    "RunDir",
    "RunInfo",
    "RunState",
    "UnsafeCheckpointError",
    "atomic_dir",
    "atomic_write",
    "check_checkpoint_name",
    "check_new_folder",
    "checkpoint_path",
    "environment_info",
    "fsync_dir",
    "load_checkpoint",
    "load_history",
    "lock_run",
    "model_checkpoints",
    "save_checkpoint",
    "upgrade_run",
    "write_csv",
    "write_json",
]
