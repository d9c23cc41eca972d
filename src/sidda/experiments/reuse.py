"""Train and evaluate a run unless its folder already holds it, and the checks that come first.

``sidda sweep`` (:mod:`sidda.sweep`) and ``sidda compare`` (:mod:`sidda.compare`) plan many
runs; before anything is trained :func:`check_plan` checks the methods
(:func:`check_methods_available`), a validator named on the command line
(:func:`check_validator`), an epoch checkpoint the runs must keep (:func:`check_checkpoint_plan`)
and the output folder (:func:`check_out_folder`). Then :func:`ensure_run` takes each run: a
run that is already complete (evaluated) with the same config and the same training data (the
SHA-256 checksums it recorded) is reused, so an interrupted sweep resumes where it stopped; a
run whose training finished but whose evaluation did not (or whose evaluation files are
damaged) is only evaluated; an interrupted one resumes from its ``last.pt``; one with another
config, or trained on data that changed since, is an error unless ``force`` retrains it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataConfig, DataError, load_domains
from sidda.errors import InputError, one_line
from sidda.evaluate.validators import ValidatorInputs, check_validator_names, validator_report
from sidda.experiments.data import DataChecksums, changed_data
from sidda.experiments.evaluation import evaluate_runs
from sidda.experiments.training import resume_run, run_config, train_run
from sidda.methods import method_class
from sidda.metrics.ranking import DEFAULT_VALIDATOR
from sidda.runs import (
    EPOCH_CHECKPOINT,
    DamagedCheckpointError,
    DamagedFileError,
    RunDir,
    RunState,
)
from sidda.train import TrainingInterrupted, resolve_device

__all__ = ["RERUN_HINT", "check_checkpoint_plan", "check_methods_available",
           "check_out_folder", "check_plan", "check_validator", "ensure_run"]

logger = logging.getLogger(__name__)

#: What an interrupted sweep or comparison says to do (its finished runs are reused, the
#: interrupted one resumes from its last.pt).
RERUN_HINT = ("rerun the same sidda {command} command to continue: finished runs are reused and "
              "this one resumes from its last checkpoint")


def check_validator(name: str, data: DataConfig, *, where: str) -> None:
    """Raise :class:`~sidda.errors.InputError` unless validator ``name`` can score runs on
    ``data``: its target test images (loaded, nothing else) are enough for the validator, and
    a validator that reads source labels gets a validation split (``data.val_fraction > 0``).

    The validator itself is asked: it scores stand-in numbers of the sizes the runs will have
    (the real counts of target test images and classes), so its own rules decide.
    """
    test = load_domains(data, splits=("test",))
    n_t, k = len(test.test_t), test.num_classes
    n_s = 0 if data.val_fraction == 0 else max(2 * k, 10)
    gen = torch.Generator().manual_seed(0)
    stand_in = ValidatorInputs(torch.randn(n_s, 4, generator=gen),
                               torch.randn(n_s, k, generator=gen), torch.arange(n_s) % k,
                               torch.randn(n_t, 4, generator=gen),
                               torch.randn(n_t, k, generator=gen))
    why = validator_report(stand_in, [name])["skipped"].get(name)
    if why is not None:
        if n_s == 0:
            why += " (data.val_fraction is 0: no source validation images)"
        raise InputError(f"{where}: --validator {name} cannot score this data set ({why}); "
                         "choose another validator")


def check_methods_available(methods: Sequence[str]) -> None:
    """Raise :class:`ConfigError` unless every method's module imports (before any training)."""
    for m in dict.fromkeys(methods):
        if m == "source_only":
            continue
        try:
            method_class(m)
        except (ImportError, AttributeError) as e:
            raise ConfigError(
                f"method {m!r} is not available in this installation ({one_line(e)}); "
                "leave it out of the list"
            ) from None


def check_checkpoint_plan(checkpoint: str, cfg: RunConfig) -> None:
    """Refuse, before anything is trained, an epoch checkpoint that the runs will not have.

    >>> check_checkpoint_plan("final", RunConfig())
    """
    if not EPOCH_CHECKPOINT.fullmatch(checkpoint):
        return
    epoch = int(checkpoint.split("_")[1])
    if not cfg.train.keep_epoch_checkpoints:
        raise ConfigError(f"--checkpoint {checkpoint}: the runs keep no epoch checkpoints; set "
                          "train.keep_epoch_checkpoints=true, or use final, best_val_acc, "
                          "best_val_loss or a label-free rule")
    if not 1 <= epoch <= cfg.train.epochs:
        raise ConfigError(f"--checkpoint {checkpoint}: the runs train {cfg.train.epochs} "
                          f"epochs; choose an epoch in 1..{cfg.train.epochs}")


def check_out_folder(out: Path) -> None:
    """``out`` may hold runs: absent, or a folder (an existing file is refused)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder (it will hold runs/ and the "
                         "tables), e.g. results/mine")


def check_plan(cfg: RunConfig, *, methods: Sequence[str], data: Mapping[str, DataConfig],
               validator: str | None, checkpoint: str, out: Path) -> str:
    """Every check of a sweep or comparison before anything is trained or written; the name of
    the label-free validator of its tables (``validator``, else the default).

    Args:
        cfg: The base config.
        methods: The methods of the runs.
        data: Where each data set's name appears in a message (``--data shapes``) -> its data
            config; a ``validator`` named on the command line must score each one.
        validator: The validator asked for, or None.
        checkpoint: The checkpoint whose metrics enter the tables.
        out: The output folder.

    Raises:
        ConfigError, InputError: an unavailable method, an unknown validator or one that
            cannot score a data set, an epoch checkpoint the runs will not keep, an output
            folder that is a file.
    """
    check_methods_available(methods)
    chosen = check_validator_names(validator or DEFAULT_VALIDATOR)[0]
    if validator is not None:  # asked for by name: it must score every data set's target
        for where, dcfg in data.items():
            check_validator(chosen, dcfg, where=where)
    check_checkpoint_plan(checkpoint, cfg)
    check_out_folder(out)
    return chosen


def _cannot_reuse(run: RunDir, problem: str) -> InputError:
    return InputError(f"{problem}; delete {run.path} to train that run again, or pass --force "
                      "to train every run again")


def _reusable_state(run: RunDir, cfg: RunConfig, checksums: DataChecksums | None) -> RunState:
    """How far ``run`` got, up to TRAINED (its evaluation is not read), once it is known to be a
    run of ``cfg`` on today's data (the files' checksums from ``checksums``, else computed
    here).

    Raises:
        ConfigError: ``run`` holds a run of another config (compared as resolved configs: a
            key an older ``config.yaml`` lacks takes its default).
        DataError: a finished ``run`` was trained on files that changed since.
        InputError: ``config.yaml`` is damaged.
    """
    if run.config_path.is_file():
        try:
            old = run_config(run)
        except DamagedFileError as e:
            raise _cannot_reuse(run, f"{e.path}: damaged ({e.reason})") from None
        if old.to_dict() != cfg.to_dict():
            raise ConfigError(f"{run.path} exists with a different config; choose another "
                              "--out, or pass --force to retrain it")
    state = run.state_up_to(RunState.TRAINED)
    now = None if checksums is None or state < RunState.TRAINED else checksums(cfg)
    if state >= RunState.TRAINED and (changed := changed_data(run, cfg, now=now)):
        raise DataError(
            f"{run.path} was trained on data that changed since ({', '.join(changed)}: SHA-256 "
            f"differs from its environment.json); delete {run.path} or pass --force to train "
            f"again on the data now, or restore the data it was trained on ({cfg.data.path})")
    return state


def ensure_run(
    run_cfg: RunConfig,
    *,
    checkpoint: str = "final",
    force: bool = False,
    argv: Sequence[str] = (),
    callbacks: Sequence = (),
    label: str = "",
    checksums: DataChecksums | None = None,
    command: str = "",
) -> dict:
    """Train and evaluate one run unless its directory already holds it; its ``metrics.json``.

    A finished run with the same config and training data is reused: its metrics as they are
    when they are of ``checkpoint`` and complete (:meth:`~sidda.runs.RunDir.evaluation`),
    else it is evaluated again; a run whose training finished is evaluated; an interrupted one
    (stopped by a signal, killed, or a machine that went down) is resumed from its
    ``last.pt`` (:func:`~sidda.experiments.resume_run`; from the start when it has none);
    anything else (no directory) is trained and evaluated.

    The training files of a finished run are hashed to compare them with those it recorded;
    give the runs of one command one :class:`~sidda.experiments.data.DataChecksums`
    (``checksums``) so that each data folder is hashed once. ``command`` (``sweep``,
    ``compare``) names the command that continues an interrupted run (:data:`RERUN_HINT`).

    Raises:
        ConfigError, DataError: the directory holds a run of another config, or one trained on
            data that changed since, and ``force`` is False.
        InputError: a reused run lost a file it needs, or one no longer reads (a checkpoint,
            a run file); the message says to delete it or to pass ``force``.
        TrainingInterrupted: SIGTERM or SIGINT while it trained (with ``command``: saying to
            rerun that command).
    """
    try:
        return _ensure_run(run_cfg, checkpoint=checkpoint, force=force, argv=argv,
                           callbacks=callbacks, label=label, checksums=checksums)
    except TrainingInterrupted as e:
        if command:
            raise e.with_hint(RERUN_HINT.format(command=command)) from None
        raise


def _ensure_run(run_cfg: RunConfig, *, checkpoint: str, force: bool, argv: Sequence[str],
                callbacks: Sequence, label: str, checksums: DataChecksums | None) -> dict:
    run = RunDir(run_cfg.run_dir)
    label = label or run.name
    if run.path.exists() and not run.path.is_dir():
        raise InputError(f"{run.path} is a file where this run's folder belongs; remove it, or "
                         "choose another --out")
    device = str(resolve_device(run_cfg.train.device))
    state = RunState.ABSENT if force else _reusable_state(run, run_cfg, checksums)
    metrics = run.evaluation() if state == RunState.TRAINED else None
    if metrics is not None:
        if checkpoint in (metrics.get("checkpoint_rule"), metrics.get("checkpoint")):
            logger.info("%s: already trained and evaluated, reused", label)
            return metrics
        logger.info("%s: already trained, evaluating checkpoint %s", label, checkpoint)
    elif state == RunState.TRAINED:
        logger.info("%s: already trained, evaluating", label)
    elif state == RunState.SET_UP or (state == RunState.SETTING_UP
                                      and run.config_path.is_file()):
        logger.info("%s: interrupted earlier, resuming it", label)  # from last.pt, if any
        resume_run(run.path, argv=argv, callbacks=callbacks)
    else:
        logger.info("training %s", label)
        train_run(run_cfg, argv=argv, force=True, callbacks=callbacks)
    try:
        return evaluate_runs([run], when="always", checkpoint=checkpoint, device=device)[0]
    except (FileNotFoundError, DamagedFileError, DamagedCheckpointError) as e:
        if state < RunState.TRAINED:
            raise
        problem = (f"{e.path}: damaged ({e.reason})" if isinstance(e, DamagedFileError)
                   else f"{e.path}: {e.reason}" if isinstance(e, DamagedCheckpointError) else e)
        raise _cannot_reuse(run, str(problem)) from None

