"""Train a run directory from a config, or continue an interrupted one.

:func:`train_run` validates everything it can (config, data, model, sizes) *before* it creates
the run directory, so bad input leaves nothing behind. :func:`resume_run` continues an
interrupted run from its own directory (``docs/recovery.md``). The run directory's files are
:class:`~sidda.runs.RunDir`'s; :func:`run_config` reads a run's ``config.yaml``.

Under torchrun every rank calls the same function with its
:class:`~sidda.train.collectives.DistContext`; every rank loads the data and builds the model,
rank 0 alone touches the run directory (:func:`on_rank0`), and an error it meets there is raised
on every rank (``docs/distributed.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DomainData, resolve_target_suffix
from sidda.errors import InputError
from sidda.experiments.data import (
    check_same_data,
    class_names,
    data_checksums,
    prepare_data,
    source_class_counts,
)
from sidda.models import build_model
from sidda.runs import (
    LOCK_NAME,
    History,
    RunDir,
    RunInfo,
    RunState,
    environment_info,
    load_checkpoint,
)
from sidda.runs.rundir import CONFIG
from sidda.train import Callback, fit, resolve_device
from sidda.train.collectives import DistContext, broadcast_object
from sidda.train.loggers import check_loggers, open_loggers
from sidda.train.recovery import read_state, resume_path

__all__ = ["on_rank0", "resolve_context", "resume_run", "run_config", "train_run"]

logger = logging.getLogger(__name__)


def run_config(run: RunDir | str | Path) -> RunConfig:
    """The config a run was trained with (its ``config.yaml``); keys an older file lacks take
    today's defaults, or the value that reproduces the run where the default has changed since
    (:meth:`~sidda.config.RunConfig.from_yaml` with ``record=True``).

    Raises:
        FileNotFoundError: no ``config.yaml`` (no run there).
        DamagedFileError: ``config.yaml`` no longer loads (named, with what to do).
    """
    run = RunDir.of(run)
    run.require(RunState.SETTING_UP)
    try:
        return RunConfig.from_yaml(run.config_path, record=True)
    except ConfigError as e:
        raise run.damaged(CONFIG, str(e).removeprefix(f"{run.config_path}: ")) from None


# ------------------------------------------------------------------------ rank 0's work


def on_rank0(fn: Callable[[], None], ctx: DistContext) -> None:
    """Run ``fn`` (work on the run directory) on rank 0 alone; raise what it raised everywhere.

    Every rank waits here for rank 0, so no rank starts training (and waits for a rank 0 that
    has failed) or looks at the run directory while rank 0 changes it.
    """
    error = None
    if ctx.is_main:
        try:
            fn()
        except Exception as e:  # re-raised below, on every rank
            error = e
    if ctx.is_distributed:
        shared = error
        try:
            pickle.loads(pickle.dumps(shared))
        except Exception:  # an exception that does not pickle: send its message
            shared = RuntimeError(f"rank 0: {error}")
        shared = broadcast_object(shared, ctx)  # every rank calls this
        error = error if ctx.is_main else shared
    if error is not None:
        raise error


def resolve_context(cfg: RunConfig, ctx: DistContext | None) -> DistContext:
    """``ctx``, checked against the config; one process on ``cfg.train.device`` for None."""
    if ctx is None:
        return DistContext(device=resolve_device(cfg.train.device))
    if cfg.train.batch_size < ctx.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is smaller than the {ctx.world_size} "
            "processes (each rank takes a shard of every batch); raise it or start fewer"
        )
    return ctx


def _run_lock(run: RunDir, ctx: DistContext, what: str) -> contextlib.AbstractContextManager:
    """The run's lock taken by rank 0 (an error it meets raised on every rank)."""
    stack = contextlib.ExitStack()
    try:
        on_rank0(lambda: stack.enter_context(run.lock(what)), ctx)
    except BaseException:
        stack.close()
        raise
    return stack


def _run_info(cfg: RunConfig, data: DomainData, sets: dict, ctx: DistContext) -> RunInfo:
    """What ``run.json`` records: the model's input and classes, the data and its splits, the
    source training images per class."""
    names = class_names(data)
    return RunInfo(
        method=cfg.loss.method, model=cfg.model.name, in_channels=data.in_channels,
        num_classes=data.num_classes, image_size=data.image_size,
        data_path=str(Path(cfg.data.path).resolve()),
        target_suffix=(resolve_target_suffix(cfg.data.path, cfg.data.target_suffix)
                       if cfg.data.layout == "zenodo" else None),
        class_names=None if names is None else tuple(names),
        sizes={k: len(v) for k, v in sets.items()}, world_size=ctx.world_size,
        source_class_counts=tuple(source_class_counts(sets["train_s"], data.num_classes)),
    )


def _environment(cfg: RunConfig, checksums: dict) -> dict:
    """``environment.json``: versions and platform, the seed, the training files' SHA-256."""
    return environment_info() | {"seed": cfg.train.seed, "data_files": checksums}


@contextlib.contextmanager
def _loggers(cfg: RunConfig, run: RunDir, ctx: DistContext,
             callbacks: Sequence[Callback]) -> Iterator[list[Callback]]:
    """``callbacks`` and, on rank 0, the loggers of ``train.log`` (closed at the end)."""
    opened = open_loggers(cfg.train.log, run.path) if ctx.is_main else []
    try:
        yield [*callbacks, *opened]
    finally:
        for cb in opened:
            cb.close()


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
    before_training: Callable[[], None] | None = None,
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
            (:func:`~sidda.train.distributed.init_distributed`); None: one process on
            ``cfg.train.device``.
        before_training: Called on rank 0 once the data has loaded and the run directory is
            set up, before epoch 1 (``sidda train`` logs its start warnings there,
            :func:`~sidda.experiments.preflight.start_warnings`).

    Raises:
        ConfigError, DataError: before anything is written.
        FileExistsError: the run directory exists and ``force`` is False.
        InputError: another process holds the run directory.
        TrainingInterrupted: SIGTERM or SIGINT; continue with :func:`resume_run`.
        NonFiniteError: training diverged (see the message for the settings to change).
    """
    run, ctx = RunDir(cfg.run_dir), resolve_context(cfg, ctx)
    run_dir = run.path

    def refuse_existing() -> None:
        if run_dir.exists() and not force and (
                run.state_up_to(RunState.SET_UP) != RunState.SETTING_UP):
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
    cfg.loss.check_model(model)  # e.g. domain_bn on a model without BatchNorm: before setup
    check_loggers(cfg.train.log)

    def write_run() -> None:  # everything is valid and the folder is ours: only now write
        refuse_existing()  # again, under the lock: another process may have made it meanwhile
        if run.state_up_to(RunState.SET_UP) == RunState.SETTING_UP and any(
                p.name != LOCK_NAME for p in run_dir.iterdir()):
            logger.info("%s holds an unfinished setup (no run.json); starting it again", run_dir)
        environment = _environment(cfg, data_checksums(cfg))
        run.clear()
        try:
            run.write_setup(cfg.to_yaml(), _run_info(cfg, data, sets, ctx),
                            environment=environment, manifest=data.manifest, argv=argv)
        except BaseException:
            run.clear()  # no half-made run: the next try starts cleanly
            raise

    with _run_lock(run, ctx, "train"):
        on_rank0(write_run, ctx)
        if before_training is not None:
            on_rank0(before_training, ctx)
        with _loggers(cfg, run, ctx, callbacks) as every:
            hist = fit(
                model, sets["train_s"], sets["train_t"], cfg.train, loss=cfg.loss,
                val_s=sets["val_s"], val_t=sets["val_t"], run_dir=run_dir, callbacks=every,
                dist_cfg=cfg.dist, ctx=ctx,
            )
        if ctx.is_main:
            run.write_summary(hist)
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
        FileNotFoundError: ``run_dir`` has no ``config.yaml``: no run to resume.
        DamagedFileError, DataError: the config no longer loads, or the training data changed.
        InputError: another process holds the run directory, or ``last.pt`` is damaged.
        TrainingInterrupted, NonFiniteError: as :func:`train_run`.
    """
    run = RunDir.of(run_dir)
    run_dir = run.path
    cfg = run_config(run)  # no config.yaml: no run to resume
    if device is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
    ctx = resolve_context(cfg, ctx)
    state = read_state(run_dir)
    if state is not None and state.finished:
        if run.summary() is None:  # stopped after its last checkpoint, before summary.json
            run.write_summary(History(**load_checkpoint(resume_path(run_dir))["history"]))
        logger.info("%s has already finished; nothing to resume", run_dir)
        return run_dir
    data, sets = prepare_data(cfg)
    model = _build_model(cfg, data)
    cfg.loss.check_model(model)  # e.g. domain_bn on a model without BatchNorm: before setup
    check_loggers(cfg.train.log)

    def prepare_dir() -> None:
        checksums = data_checksums(cfg)
        if run.state_up_to(RunState.SET_UP) >= RunState.SET_UP:
            check_same_data(run, cfg, now=checksums)
        else:
            logger.info("%s was stopped during its setup; completing it and starting from the "
                        "beginning", run_dir)
        run.complete_setup(_run_info(cfg, data, sets, ctx),
                           environment=_environment(cfg, checksums), manifest=data.manifest,
                           argv=argv)

    with _run_lock(run, ctx, "train --resume"):
        on_rank0(prepare_dir, ctx)
        with _loggers(cfg, run, ctx, callbacks) as every:
            hist = fit(
                model, sets["train_s"], sets["train_t"], cfg.train, loss=cfg.loss,
                val_s=sets["val_s"], val_t=sets["val_t"], run_dir=run_dir, callbacks=every,
                resume=True, dist_cfg=cfg.dist, ctx=ctx,
            )
        if ctx.is_main:
            run.write_summary(hist)
    return run_dir
