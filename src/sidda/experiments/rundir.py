"""The run directory while a run is set up: rank 0's work, the lock and the setup files.

A new run's folder gets ``config.yaml``, ``argv.txt``, ``environment.json``,
``data_manifest.json`` and, last, ``run.json`` (:func:`write_setup`): a folder without
``run.json`` is an unfinished setup (:func:`unfinished_setup`), which ``train`` may start again
and ``--resume`` completes. Under torchrun rank 0 alone touches the folder and an error it meets
there is raised on every rank (:func:`on_rank0`, ``docs/distributed.md``).
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DomainData, resolve_target_suffix
from sidda.experiments.data import class_names, data_checksums
from sidda.runs import LOCK_NAME, atomic_write, environment_info, lock_run, write_json
from sidda.train import History, resolve_device
from sidda.train.collectives import DistContext, broadcast_object

__all__ = ["SETUP_FILES", "clear_run_dir", "on_rank0", "resolve_context", "run_lock",
           "unfinished_setup", "write_setup", "write_summary"]

#: What a run directory holds before ``run.json`` is written (killed or failed during setup).
SETUP_FILES = {LOCK_NAME, "config.yaml", "argv.txt", "environment.json", "data_manifest.json"}


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


def write_summary(run_dir: Path, hist: History) -> None:
    """``summary.json``: best epochs, early stop, epochs, seconds, skipped steps, last record."""
    write_json(run_dir / "summary.json", {
        "best_epochs": hist.best, "stopped_early": hist.stopped_early,
        "epochs_run": len(hist.epochs), "seconds": sum(e["seconds"] for e in hist.epochs),
        "skipped_steps": sum(e.get("skipped_steps", 0) for e in hist.epochs),
        "final": hist.epochs[-1],
    })


def run_lock(run_dir: Path, ctx: DistContext, what: str) -> contextlib.AbstractContextManager:
    """:func:`~sidda.runs.lock_run` taken by rank 0 (an error it meets raised on every rank)."""
    stack = contextlib.ExitStack()
    try:
        on_rank0(lambda: stack.enter_context(lock_run(run_dir, what=what)), ctx)
    except BaseException:
        stack.close()
        raise
    return stack


def unfinished_setup(run_dir: Path) -> bool:
    """True when ``run_dir`` holds only what :func:`write_setup` writes before ``run.json``.

    Such a folder was never trained: killed (or failed) while being set up. It may be
    started again without ``--force``, or resumed (which completes the setup).
    """
    if not run_dir.is_dir() or (run_dir / "run.json").exists():
        return False
    return all(p.name in SETUP_FILES or (p.name.startswith(".") and ".tmp" in p.name)
               for p in run_dir.iterdir())


def clear_run_dir(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` but the lock file (held by this process)."""
    for p in run_dir.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def write_setup(run_dir: Path, cfg: RunConfig, data: DomainData, sets: dict, argv: Sequence[str],
                ctx: DistContext, *, resuming: bool = False) -> None:
    """The files of a new run, ``run.json`` last: a folder without it is an unfinished setup.

    ``resuming``: complete the setup of a run killed before ``run.json``; its own
    ``config.yaml`` stays, and ``argv`` is appended to ``argv.txt``.
    """
    checksums = data_checksums(cfg)
    if resuming:
        with open(run_dir / "argv.txt", "a") as f:
            f.write(" ".join(argv) + "\n")
    else:
        atomic_write(run_dir / "config.yaml", cfg.to_yaml())
        atomic_write(run_dir / "argv.txt", " ".join(argv) + "\n")
    write_json(run_dir / "environment.json", environment_info() | {
        "seed": cfg.train.seed, "data_files": checksums})
    write_json(run_dir / "data_manifest.json", data.manifest)
    write_json(run_dir / "run.json", {
        "method": cfg.loss.method, "model": cfg.model.name, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "image_size": data.image_size,
        "data_path": str(Path(cfg.data.path).resolve()),
        "target_suffix": (resolve_target_suffix(cfg.data.path, cfg.data.target_suffix)
                          if cfg.data.layout == "zenodo" else None),
        "class_names": class_names(data),
        "sizes": {k: len(v) for k, v in sets.items()},
        "world_size": ctx.world_size,
    })
