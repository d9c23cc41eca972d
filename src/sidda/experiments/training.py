"""Train a run directory from a config, or continue an interrupted one.

:func:`train_run` validates everything it can (config, data, model, sizes) *before* it creates
the run directory, so bad input leaves nothing behind. :func:`resume_run` continues an
interrupted run from its own directory (``docs/recovery.md``).

Under torchrun every rank calls the same function with its
:class:`~sidda.distributed.DistContext`; every rank loads the data and builds the model, rank 0
alone touches the run directory, and an error it meets there is raised on every rank
(``docs/distributed.md``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DomainData
from sidda.errors import InputError
from sidda.experiments.data import check_same_data, data_checksums, prepare_data
from sidda.experiments.rundir import (
    clear_run_dir,
    on_rank0,
    resolve_context,
    run_lock,
    unfinished_setup,
    write_setup,
    write_summary,
)
from sidda.models import build_model
from sidda.runs import LOCK_NAME, environment_info, write_json
from sidda.train import Callback, fit
from sidda.train.collectives import DistContext
from sidda.train.recovery import read_state

__all__ = ["resume_run", "train_run"]

logger = logging.getLogger(__name__)


def _build_model(cfg: RunConfig, data: DomainData) -> torch.nn.Module:
    """The run's model with its initial weights (seeded by ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    try:
        return build_model(
            cfg.model.name, in_channels=data.in_channels, num_classes=data.num_classes,
            image_size=data.image_size, dropout=cfg.model.dropout,
            latent_dim=cfg.model.latent_dim,
        )
    except InputError:  # e.g. a custom backbone that cannot be imported: its own message
        raise
    except ValueError as e:
        raise ConfigError(
            f"model.name={cfg.model.name!r} cannot take the data's {data.in_channels}x"
            f"{data.image_size}x{data.image_size} images: {e}"
        ) from None


def train_run(
    cfg: RunConfig,
    *,
    argv: Sequence[str] = (),
    force: bool = False,
    callbacks: Sequence[Callback] = (),
    ctx: DistContext | None = None,
) -> Path:
    """Train one run into ``cfg.run_dir`` and return that directory.

    The run directory is locked (:func:`~sidda.runs.lock_run`) from its setup to the end of
    training: a second ``train``, ``--resume`` or ``evaluate`` of the same run is refused.
    A folder left by a run killed during its setup (no ``run.json``) is started again without
    ``force``.

    Args:
        cfg: The experiment.
        argv: The command line, recorded in ``argv.txt``.
        force: Replace an existing run directory.
        callbacks: Passed to :func:`~sidda.train.fit`.
        ctx: This process's rank and device under torchrun
            (:func:`~sidda.distributed.init_distributed`); None: one process on
            ``cfg.train.device``.

    Raises:
        ConfigError, DataError: before anything is written.
        FileExistsError: the run directory exists and ``force`` is False.
        InputError: another process holds the run directory.
        TrainingInterrupted: SIGTERM or SIGINT; continue with :func:`resume_run`.
        NonFiniteError: training diverged (see the message for the settings to change).
    """
    run_dir, ctx = cfg.run_dir, resolve_context(cfg, ctx)

    def refuse_existing() -> None:
        if run_dir.exists() and not force and not unfinished_setup(run_dir):
            raise FileExistsError(
                f"{run_dir} already exists; continue it with `sidda train --resume {run_dir}`, "
                "choose another name (--set name=...), or pass --force to replace it"
            )

    on_rank0(refuse_existing, ctx)
    data, sets = prepare_data(cfg)
    if cfg.train.early_stopping is not None and not len(sets["val_s"]):
        raise ConfigError(
            "train.early_stopping needs source validation images, but the validation split is "
            f"empty (data.val_fraction={cfg.data.val_fraction}); raise data.val_fraction or set "
            "train.early_stopping: null"
        )
    if len(sets["train_t"]) < ctx.world_size:
        raise ConfigError(
            f"{ctx.world_size} processes need at least as many target training images, got "
            f"{len(sets['train_t'])}; start fewer processes"
        )
    model = _build_model(cfg, data)

    def write_run() -> None:  # everything is valid and the folder is ours: only now write
        refuse_existing()  # again, under the lock: another process may have made it meanwhile
        if unfinished_setup(run_dir) and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            logger.info("%s holds an unfinished setup (no run.json); starting it again", run_dir)
        clear_run_dir(run_dir)
        try:
            write_setup(run_dir, cfg, data, sets, argv, ctx)
        except BaseException:
            clear_run_dir(run_dir)  # no half-made run: the next try starts cleanly
            raise

    with run_lock(run_dir, ctx, "train"):
        on_rank0(write_run, ctx)
        hist = fit(
            model, sets["train_s"], sets["train_t"], cfg.train, loss=cfg.loss,
            val_s=sets["val_s"], val_t=sets["val_t"], run_dir=run_dir, callbacks=callbacks,
            dist_cfg=cfg.dist, ctx=ctx,
        )
        if ctx.is_main:
            write_summary(run_dir, hist)
    return run_dir


def resume_run(
    run_dir: str | Path,
    *,
    argv: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
    ctx: DistContext | None = None,
    device: str | None = None,
) -> Path:
    """Continue an interrupted run from ``run_dir/checkpoints/last.pt`` with its own config.

    On the CPU the result is bit-identical to a run that was never interrupted. A run with
    no ``last.pt`` yet starts from the beginning (a run killed during its setup, with only
    ``config.yaml``, gets the rest of its files first); a finished run is left as it is. The
    run directory is locked while training (:func:`~sidda.runs.lock_run`). Under torchrun every
    rank reads the run's ``config.yaml`` and ``last.pt``: the run directory must be visible to
    all of them (one machine, or a shared file system).

    Args:
        run_dir: The run directory.
        argv: The command line, appended to ``argv.txt``.
        callbacks: Passed to :func:`~sidda.train.fit`.
        ctx: As for :func:`train_run`.
        device: Train on this device instead of the run's ``train.device``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
        ConfigError, DataError: the config no longer loads, or the training data changed.
        InputError: another process holds the run directory, or ``last.pt`` is damaged.
        TrainingInterrupted, NonFiniteError: as :func:`train_run`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"{run_dir}: not a run directory (no config.yaml), so there is nothing to resume; "
            "start the run with `sidda train --config ...`"
        )
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    if device is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
    ctx = resolve_context(cfg, ctx)
    state = read_state(run_dir)
    if state is not None and state.finished:
        logger.info("%s has already finished; nothing to resume", run_dir)
        return run_dir
    data, sets = prepare_data(cfg)
    model = _build_model(cfg, data)

    def prepare_dir() -> None:
        for stale in [*run_dir.glob(".*.tmp*"), *run_dir.glob("checkpoints/.*.tmp*")]:
            stale.unlink()  # a write that SIGKILL cut short; the complete file is in place
        if not (run_dir / "run.json").is_file():  # killed while being set up: finish that
            logger.info("%s was stopped during its setup; completing it and starting from the "
                        "beginning", run_dir)
            write_setup(run_dir, cfg, data, sets, argv, ctx, resuming=True)
            return
        check_same_data(run_dir, cfg)
        if not (run_dir / "environment.json").is_file():  # killed while being set up
            write_json(run_dir / "environment.json", environment_info() | {
                "seed": cfg.train.seed, "data_files": data_checksums(cfg)})
        if not (run_dir / "data_manifest.json").is_file():
            write_json(run_dir / "data_manifest.json", data.manifest)
        with open(run_dir / "argv.txt", "a") as f:  # one line per resume, after the original
            f.write(" ".join(argv) + "\n")

    with run_lock(run_dir, ctx, "train --resume"):
        on_rank0(prepare_dir, ctx)
        hist = fit(
            model, sets["train_s"], sets["train_t"], cfg.train, loss=cfg.loss,
            val_s=sets["val_s"], val_t=sets["val_t"], run_dir=run_dir, callbacks=callbacks,
            resume=True, dist_cfg=cfg.dist, ctx=ctx,
        )
        if ctx.is_main:
            write_summary(run_dir, hist)
    return run_dir
