"""Whole experiments: train a run directory from a config, evaluate it, run the demo.

:func:`train_run` validates everything it can (config, data, model, sizes) *before* it creates
the run directory, so bad input leaves nothing behind. :func:`resume_run` continues an
interrupted run from its own directory (``docs/recovery.md``).

Under torchrun every rank calls the same function with its
:class:`~sidda.distributed.DistContext`; every rank loads the data and builds the model, rank 0
alone touches the run directory, and an error it meets there is raised on every rank
(``docs/distributed.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pickle
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sidda.config import ConfigError, RunConfig
from sidda.datasets import (
    DataConfig,
    DataError,
    DomainData,
    file_checksum,
    layout_paths,
    load_domains,
    split_indices,
)
from sidda.distributed import DistContext, broadcast_object, check_device
from sidda.errors import short_repr
from sidda.evaluate import check_bins, domain_metrics, predict, publish_evaluation
from sidda.methods.domain_bn import load_target_stats
from sidda.models import build_model
from sidda.recovery import read_state
from sidda.runs import (
    CHECKPOINTS,
    LOCK_NAME,
    atomic_write,
    environment_info,
    load_checkpoint,
    lock_run,
    write_json,
)
from sidda.train import Callback, History, fit, resolve_device

__all__ = [
    "data_checksums",
    "evaluate_run",
    "evaluation_dir",
    "load_run_model",
    "prepare_data",
    "resume_run",
    "train_run",
]

logger = logging.getLogger(__name__)


def _check_fits(cfg: RunConfig, data: DomainData, n_train_s: int) -> None:
    if cfg.data.num_classes is not None and cfg.data.num_classes != data.num_classes:
        raise ConfigError(
            f"data.num_classes is {cfg.data.num_classes} but the labels hold {data.num_classes} "
            "classes; fix data.num_classes or the labels"
        )
    if cfg.train.batch_size > n_train_s:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is larger than the {n_train_s} source "
            "training images (after the validation split); lower train.batch_size"
        )


def prepare_data(cfg: RunConfig) -> tuple[DomainData, dict]:
    """Load the training data and split each domain into train/validation.

    Returns:
        The loaded data and a dict of the four :class:`~sidda.datasets.ImageSet` splits
        (``train_s``, ``val_s``, ``train_t``, ``val_t``).
    """
    data = load_domains(cfg.data, splits=("train",))
    seed = cfg.train.seed
    tr_s, va_s = split_indices(len(data.train_s), cfg.data.val_fraction, seed=seed)
    tr_t, va_t = split_indices(len(data.train_t), cfg.data.val_fraction, seed=seed + 1)
    sets = {
        "train_s": data.train_s.subset(tr_s),
        "val_s": data.train_s.subset(va_s),
        "train_t": data.train_t.subset(tr_t),
        "val_t": data.train_t.subset(va_t),
    }
    _check_fits(cfg, data, len(tr_s))
    return data, sets


def _build_model(cfg: RunConfig, data: DomainData) -> torch.nn.Module:
    """The run's model with its initial weights (seeded by ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    try:
        return build_model(
            cfg.model.name, in_channels=data.in_channels, num_classes=data.num_classes,
            image_size=data.image_size, dropout=cfg.model.dropout,
            latent_dim=cfg.model.latent_dim,
        )
    except ValueError as e:
        raise ConfigError(
            f"model.name={cfg.model.name!r} cannot take the data's {data.in_channels}x"
            f"{data.image_size}x{data.image_size} images: {e}"
        ) from None


def data_checksums(cfg: RunConfig) -> dict[str, dict]:
    """Size and SHA-256 of every training file a run reads, keyed by path in the data folder."""
    root = Path(cfg.data.path)
    paths = layout_paths(root, layout=cfg.data.layout, source_suffix=cfg.data.source_suffix,
                         target_suffix=cfg.data.target_suffix)
    files = [p for key in ("train_s", "train_t") for p in paths[key] if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    if total > 2**30:
        logger.info("computing the SHA-256 of %.1f GB of training data (recorded in "
                    "environment.json)", total / 2**30)
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size,
                                             "sha256": file_checksum(p)} for p in files}


def _check_same_data(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to resume on training files that differ from those the run started with."""
    env_path = run_dir / "environment.json"
    recorded = (json.loads(env_path.read_text()) if env_path.is_file() else {}).get("data_files")
    if not recorded:
        logger.warning("%s records no data checksums; cannot check that the data is unchanged",
                       env_path)
        return
    now = data_checksums(cfg)
    changed = sorted(f for f in set(recorded) | set(now) if recorded.get(f) != now.get(f))
    if changed:
        raise DataError(
            f"{cfg.data.path}: {', '.join(changed)} changed since the run started (SHA-256 "
            "differs from environment.json); restore the original data, or start a new run"
        )


def _on_rank0(fn: Callable[[], None], ctx: DistContext) -> None:
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


def _context(cfg: RunConfig, ctx: DistContext | None) -> DistContext:
    if ctx is None:
        return DistContext(device=resolve_device(cfg.train.device))
    if cfg.train.batch_size < ctx.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is smaller than the {ctx.world_size} "
            "processes (each rank takes a shard of every batch); raise it or start fewer"
        )
    return ctx


def _write_summary(run_dir: Path, hist: History) -> None:
    write_json(run_dir / "summary.json", {
        "best_epochs": hist.best, "stopped_early": hist.stopped_early,
        "epochs_run": len(hist.epochs), "seconds": sum(e["seconds"] for e in hist.epochs),
        "skipped_steps": sum(e.get("skipped_steps", 0) for e in hist.epochs),
        "final": hist.epochs[-1],
    })


def _run_lock(run_dir: Path, ctx: DistContext, what: str) -> contextlib.AbstractContextManager:
    """:func:`~sidda.runs.lock_run` taken by rank 0 (an error it meets raised on every rank)."""
    stack = contextlib.ExitStack()
    try:
        _on_rank0(lambda: stack.enter_context(lock_run(run_dir, what=what)), ctx)
    except BaseException:
        stack.close()
        raise
    return stack


#: What a run directory holds before ``run.json`` is written (killed or failed during setup).
_SETUP_FILES = {LOCK_NAME, "config.yaml", "argv.txt", "environment.json", "data_manifest.json"}


def _unfinished_setup(run_dir: Path) -> bool:
    """True when ``run_dir`` holds only what :func:`train_run` writes before ``run.json``.

    Such a folder was never trained: killed (or failed) while being set up. It may be
    started again without ``--force``, or resumed (which completes the setup).
    """
    if not run_dir.is_dir() or (run_dir / "run.json").exists():
        return False
    return all(p.name in _SETUP_FILES or (p.name.startswith(".") and ".tmp" in p.name)
               for p in run_dir.iterdir())


def _clear_run_dir(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` but the lock file (held by this process)."""
    for p in run_dir.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _write_setup(run_dir: Path, cfg: RunConfig, data: DomainData, sets: dict, argv: Sequence[str],
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
        "class_names": _class_names(data),
        "sizes": {k: len(v) for k, v in sets.items()},
        "world_size": ctx.world_size,
    })


def _class_names(data: DomainData) -> list | None:
    """The manifest's class names, when there is one per class."""
    names = data.manifest.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != data.num_classes):
        logger.warning("the data's manifest.json names %s classes but the labels hold %d; "
                       "classes are shown by number", short_repr(names), data.num_classes)
        return None
    return names


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
    run_dir, ctx = cfg.run_dir, _context(cfg, ctx)

    def refuse_existing() -> None:
        if run_dir.exists() and not force and not _unfinished_setup(run_dir):
            raise FileExistsError(
                f"{run_dir} already exists; continue it with `sidda train --resume {run_dir}`, "
                "choose another name (--set name=...), or pass --force to replace it"
            )

    _on_rank0(refuse_existing, ctx)
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
        if _unfinished_setup(run_dir) and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            logger.info("%s holds an unfinished setup (no run.json); starting it again", run_dir)
        _clear_run_dir(run_dir)
        try:
            _write_setup(run_dir, cfg, data, sets, argv, ctx)
        except BaseException:
            _clear_run_dir(run_dir)  # no half-made run: the next try starts cleanly
            raise

    with _run_lock(run_dir, ctx, "train"):
        _on_rank0(write_run, ctx)
        hist = fit(
            model, sets["train_s"], sets["train_t"], cfg.train, loss=cfg.loss,
            val_s=sets["val_s"], val_t=sets["val_t"], run_dir=run_dir, callbacks=callbacks,
            dist_cfg=cfg.dist, ctx=ctx,
        )
        if ctx.is_main:
            _write_summary(run_dir, hist)
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
    ctx = _context(cfg, ctx)
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
            _write_setup(run_dir, cfg, data, sets, argv, ctx, resuming=True)
            return
        _check_same_data(run_dir, cfg)
        if not (run_dir / "environment.json").is_file():  # killed while being set up
            write_json(run_dir / "environment.json", environment_info() | {
                "seed": cfg.train.seed, "data_files": data_checksums(cfg)})
        if not (run_dir / "data_manifest.json").is_file():
            write_json(run_dir / "data_manifest.json", data.manifest)
        with open(run_dir / "argv.txt", "a") as f:  # one line per resume, after the original
            f.write(" ".join(argv) + "\n")

    with _run_lock(run_dir, ctx, "train --resume"):
        _on_rank0(prepare_dir, ctx)
        hist = fit(
            model, sets["train_s"], sets["train_t"], cfg.train, loss=cfg.loss,
            val_s=sets["val_s"], val_t=sets["val_t"], run_dir=run_dir, callbacks=callbacks,
            resume=True, dist_cfg=cfg.dist, ctx=ctx,
        )
        if ctx.is_main:
            _write_summary(run_dir, hist)
    return run_dir


def load_run_model(
    run_dir: str | Path, checkpoint: str = "final", *, domain: str = "source"
) -> tuple[torch.nn.Module, dict]:
    """Rebuild a run's model from its directory and load a checkpoint into it.

    ``domain="target"`` loads the target domain's BatchNorm statistics into the model when the
    run kept its own for each domain (robust SIDDA, :mod:`sidda.methods.domain_bn`); otherwise
    both domains get the same model.
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.json); train one first")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    info = json.loads(info_path.read_text())
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    model = build_model(
        cfg.model.name, in_channels=info["in_channels"], num_classes=info["num_classes"],
        image_size=info["image_size"], dropout=cfg.model.dropout,
        latent_dim=cfg.model.latent_dim,
    )
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt")
    model.load_state_dict(ckpt["model"])
    stats = load_target_stats(model, ckpt.get("loss") or {})
    if domain == "target" and stats is not None:
        stats._swap()  # the target statistics now sit in the model's layers, for good
    return model.eval(), info | {"checkpoint_epoch": ckpt["epoch"],
                                 "domain_bn": stats is not None}


def evaluate_run(
    run_dir: str | Path,
    *,
    data_path: str | Path | None = None,
    checkpoint: str = "final",
    device: str = "cpu",
    n_bins: int = 15,
    calibration: bool = True,
    selection: bool = True,
) -> dict:
    """Evaluate a run on the source and target test sets and write ``metrics.json``.

    Beyond the test metrics of the chosen checkpoint (:mod:`sidda.evaluate` lists them):

    * temperature scaling, fitted on the run's own **source validation** split (rebuilt with
      :func:`prepare_data`, same seed) and applied to both test domains;
    * the paper-compatible probe numbers, cross-fitted;
    * label-free selection over all saved checkpoints, with the target-label oracle.

    Args:
        run_dir: A directory written by :func:`train_run`.
        data_path: Data folder (default: the one the run was trained on); its ``train``
            split provides the validation images.
        checkpoint: ``final``, ``best_val_acc`` or ``best_val_loss``.
        device: Where to compute.
        n_bins: Bins of the ECE.
        calibration: Add temperature scaling and the paper-compatible probe.
        selection: Add the label-free checkpoint selection.

    The run directory is locked while it is evaluated (:func:`~sidda.runs.lock_run`), and the
    results are written as a whole (:func:`~sidda.evaluate.publish_evaluation`): into the run
    directory for the run's own data, into ``RUN/eval/<data folder name>`` for other data
    (:func:`evaluation_dir`).

    Raises:
        InputError: a bad option (``n_bins``, ``device``), another process holds the run, a
            damaged checkpoint; :class:`~sidda.datasets.DataError` for unusable data.
    """
    run_dir = Path(run_dir)
    check_bins(n_bins)
    device = str(check_device(device))
    if not (run_dir / "run.json").is_file():  # before the lock, which would make the folder
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.json); train one first")
    out_dir = evaluation_dir(run_dir, data_path)
    with lock_run(run_dir, what="evaluate"):
        return _evaluate_locked(run_dir, out_dir, data_path=data_path, checkpoint=checkpoint,
                                device=device, n_bins=n_bins, calibration=calibration,
                                selection=selection)


def evaluation_dir(run_dir: str | Path, data_path: str | Path | None = None) -> Path:
    """Where :func:`evaluate_run` writes ``metrics.json`` and the per-image arrays.

    The run directory itself for the data the run was trained on (``data_path`` None or that
    folder); ``RUN/eval/<folder name>`` for other data, so that evaluating elsewhere never
    replaces the run's own results.

    >>> evaluation_dir("runs/a")
    PosixPath('runs/a')
    """
    run_dir = Path(run_dir)
    if data_path is None:
        return run_dir
    other = Path(data_path).resolve()
    own = set()
    if (run_dir / "run.json").is_file():
        with contextlib.suppress(ValueError, OSError):
            own.add(json.loads((run_dir / "run.json").read_text()).get("data_path"))
    if (run_dir / "config.yaml").is_file():
        with contextlib.suppress(ValueError, OSError):
            own.add(str(Path(RunConfig.from_yaml(run_dir / "config.yaml").data.path).resolve()))
    if str(other) in own:
        return run_dir
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in other.name).lstrip(".")
    return run_dir / "eval" / (name or "data")


def _evaluate_locked(
    run_dir: Path, out_dir: Path, *, data_path: str | Path | None, checkpoint: str, device: str,
    n_bins: int, calibration: bool, selection: bool,
) -> dict:
    """:func:`evaluate_run` with the run directory locked."""
    from dataclasses import replace

    from sidda.datasets import ImageSet
    from sidda.evaluate import (
        Predictions,
        checkpoint_scores,
        fit_source_temperature,
        paper_compatible,
        select_checkpoints,
        temperature_metrics,
    )
    from sidda.models import export_model

    model, info = load_run_model(run_dir, checkpoint)
    model_t = load_run_model(run_dir, checkpoint, domain="target")[0] if info["domain_bn"] \
        else model
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    dcfg = DataConfig(**{**cfg.data.__dict__, "path": str(data_path or cfg.data.path)})
    data = load_domains(dcfg, splits=("test",))
    if data.test_s.shape != (info["in_channels"], info["image_size"], info["image_size"]):
        raise DataError(
            f"test images have shape {data.test_s.shape} but the model was trained on "
            f"{(info['in_channels'], info['image_size'], info['image_size'])}"
        )
    for images in (data.test_s, data.test_t):
        if images.y is not None and len(images.y) and int(images.y.max()) >= info["num_classes"]:
            raise DataError(
                f"{images.name}: label {int(images.y.max())} is outside the model's classes "
                f"0..{info['num_classes'] - 1}; evaluate on data with the run's "
                f"{info['num_classes']} classes"
            )
    report = {
        "method": info["method"], "model": info["model"], "checkpoint": checkpoint,
        "checkpoint_epoch": info["checkpoint_epoch"], "data_path": str(Path(dcfg.path).resolve()),
        "n_bins": n_bins,
    }
    preds = {}
    names = info.get("class_names")
    if names is not None and len(names) != info["num_classes"]:
        names = None  # a run from before run.json checked them: classes by number
    for domain, images, net in (("source", data.test_s, model), ("target", data.test_t, model_t)):
        preds[domain] = pred = predict(net, images, device=device)
        report[domain] = domain_metrics(
            pred, num_classes=info["num_classes"], class_names=names, n_bins=n_bins,
        )
    if calibration or selection:
        # The run's own train/validation split, rebuilt exactly as train_run made it.
        _, sets = prepare_data(replace(cfg, data=dcfg))
        expected = (info.get("sizes") or {}).get("val_s")
        if expected is not None and expected != len(sets["val_s"]):
            raise DataError(
                f"{dcfg.path}: the source validation split has {len(sets['val_s'])} images but "
                f"the run was trained with {expected}; evaluate with the training data folder"
            )
        val_t_images = ImageSet(sets["val_t"].x, None, sets["val_t"].name)  # labels dropped
        val_s = (predict(model, sets["val_s"], device=device) if len(sets["val_s"]) else
                 Predictions(torch.empty(0, info["num_classes"]), torch.empty(0, 0), None))
    if calibration:
        # Source validation logits and labels only: no target label reaches the fit.
        temp = fit_source_temperature(val_s)
        report["temperature"] = temp
        for domain, pred in preds.items():
            if pred.labels is None:
                continue
            if temp["value"] is not None:
                report[domain]["temperature_scaled"] = temperature_metrics(
                    pred.logits, pred.labels, temp["value"], n_bins=n_bins
                )
            report[domain]["paper_compatible"] = paper_compatible(pred)
    if selection and len(sets["val_s"]) and len(sets["val_t"]):
        candidates = {}
        for name in CHECKPOINTS:
            path = run_dir / "checkpoints" / f"{name}.pt"
            if not path.is_file():
                continue
            if name == checkpoint:  # reuse what was computed above
                p = {"val_s": val_s, "test_s": preds["source"],
                     "test_t": preds["target"]}
                p["val_t"] = predict(model_t, val_t_images, device=device)
            else:
                net = export_model(load_run_model(run_dir, name)[0])
                net_t = export_model(load_run_model(run_dir, name, domain="target")[0]) \
                    if info["domain_bn"] else net
                p = {key: predict(m, images, device=device, export=False) for key, images, m in (
                    ("val_s", sets["val_s"], net), ("val_t", val_t_images, net_t),
                    ("test_s", data.test_s, net), ("test_t", data.test_t, net_t))}
            candidates[name] = checkpoint_scores(**p, record=load_checkpoint(path).get("record"))
        report["selection"] = select_checkpoints(candidates)
    elif selection:
        report["selection"] = {"candidates": {}, "rules": {}, "reason": (
            "no validation images (data.val_fraction = 0): nothing to select with")}
    publish_evaluation(out_dir, report, preds, own_folder=out_dir != run_dir)
    return report
