"""One training loop for every method and the source-only baseline (docs/method.md, "Training").

Per epoch, the source defines the steps (every source image once, shuffled, transformed by
``train.augment``, :mod:`sidda.train.augment`); the target stream cycles independently, so the
two domains may have any sizes. During the ``warmup`` epochs the objective is source
cross-entropy alone. After it, the method (:mod:`sidda.methods`) makes its forward passes (one
on the concatenated batch ``cat([x_s, x_t])`` by default, as in the paper; one per domain with
``loss.domain_bn``) and minimises its objective (:func:`~sidda.train.step.train_step`). A method
that does not align (``adabn``) trains like ``source_only``, and once the epochs are done the
method's :meth:`~sidda.methods.base.DAMethod.after_training` runs before the final checkpoint
(AdaBN's target statistics; the checkpoints saved before then get theirs too). Every method
uses AdamW, MultiStepLR (stepped per epoch) and gradient clipping at 10 (the baseline is
optimisation-matched, unlike the authors' scripts).

Validation (:mod:`sidda.train.validate`) runs every epoch on the held-out source split and the
target validation images, without target labels. Model selection never reads target labels:

* ``best_val_acc``: highest source validation accuracy after the warm-up (ties: earlier);
* ``best_val_loss``: lowest validation CE + DA (unweighted, comparable across epochs) after
  the warm-up;
* ``final``: the last epoch;
* with ``train.keep_epoch_checkpoints``, every epoch as ``epoch_0007.pt`` as well, for
  label-free rules that choose among all the epochs.

Epochs are numbered from 1 wherever users see them: the ``epoch`` of the step and epoch
records (``history.csv``, ``history_steps.csv``, the callbacks), of the checkpoints and of
``History.best``. :class:`~sidda.train.recovery.TrainState` counts the epochs done (0-based
position), for resuming.

Early stopping (``early_stopping`` = patience) counts post-warm-up epochs without improvement
of the validation total loss, and resets on improvement.

Recovery (:mod:`sidda.train.recovery`, ``docs/recovery.md``): ``fit(..., resume=True)`` continues
from ``checkpoints/last.pt`` bit for bit on the CPU; SIGTERM and SIGINT save it and raise
:class:`TrainingInterrupted`; a step with a non-finite latent, loss or gradient is skipped, and
``max_bad_steps`` of them in a row raise :class:`NonFiniteError`.

Several processes and the GPU (:mod:`sidda.train.distributed`, ``docs/distributed.md``): given a
:class:`~sidda.train.distributed.DistContext` from ``init_distributed`` (torchrun), every rank runs
this same loop on its shard of each global batch, with the model in DistributedDataParallel;
the logged values, the skip decisions and the stops are the same on every rank, rank 0 alone
validates (then shares the result) and writes. On CUDA the forward pass runs under bf16
autocast and the loss in float32 (:class:`~sidda.train.config.DistConfig`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sidda.datasets import ImageSet, batches, cycle_batches
from sidda.errors import InputError
from sidda.methods import DAMethod, LossConfig, build_method
from sidda.models import tune_cpu_allocator
from sidda.runs import History
from sidda.train.augment import augment_batch
from sidda.train.collectives import DistContext, broadcast_object, max_over_ranks, shard_indices
from sidda.train.config import DistConfig, TrainConfig
from sidda.train.device import resolve_device, to_device, use_channels_last
from sidda.train.distributed import prepare_model, unwrap
from sidda.train.finish import refit_checkpoints
from sidda.train.recovery import (
    Checkpointer,
    NonFiniteError,
    SignalCatcher,
    TrainingInterrupted,
    TrainState,
    count_bad_step,
    epoch_checkpoint,
    read_last,
    restore_rng,
    resume_path,
)
from sidda.train.step import train_step
from sidda.train.validate import validate

__all__ = ["Callback", "fit"]

logger = logging.getLogger(__name__)

Callback = Callable[[str, dict], None]


@dataclass
class _Run:
    """Everything the epoch loop reads and updates."""

    cfg: TrainConfig
    loss: LossConfig
    dist: DistConfig
    ctx: DistContext
    net: nn.Module  # the model, in DDP with several ranks
    criterion: DAMethod | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    ckpt: Checkpointer
    run_dir: Path | None
    callbacks: Sequence[Callback]
    hist: History = field(default_factory=History)
    state: TrainState = field(default_factory=TrainState)
    signals: SignalCatcher | None = None

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def channels_last(self) -> bool:
        return use_channels_last(self.dist, self.device)

    @property
    def adapting(self) -> bool:
        """Whether the method trains on target batches after the warm-up."""
        return self.criterion is not None and self.criterion.aligns

    def save_last(self) -> None:
        self.ckpt.save_last(self.state, dataclasses.asdict(self.hist))

    def write_history(self) -> None:
        if self.ckpt.writes:
            self.hist.write(self.run_dir)

    def stop_if_signalled(self, n_steps: int) -> None:
        """After SIGTERM or SIGINT (to any rank): write the histories and ``last.pt``, raise."""
        if self.signals is None:
            return
        signum = max_over_ranks(self.signals.signum or 0, self.ctx)  # all ranks stop together
        if not signum:
            return
        self.write_history()
        self.save_last()
        logger.info("state saved to %s", resume_path(self.run_dir))
        raise TrainingInterrupted(
            signum, run_dir=self.run_dir, epoch=self.state.epoch + 1, epochs=self.cfg.epochs,
            step=self.state.step, n_steps=n_steps)


#: Step columns that are bookkeeping, not values to average per epoch.
_STEP_BOOK = frozenset({"epoch", "step", "phase", "lr", "grad_norm", "skipped"})


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


@torch.no_grad()
def _output_dims(model: nn.Module, images: ImageSet) -> tuple[int, int]:
    """(latent width D, number of classes K) of ``model``, from one eval-mode forward pass."""
    was = model.training
    model.eval()
    try:
        z, logits = model(images.x[torch.arange(1)].to(next(model.parameters()).device))
    finally:
        model.train(was)
    return int(z.shape[-1]), int(logits.shape[-1])


def fit(
    model: nn.Module,
    train_s: ImageSet,
    train_t: ImageSet | None,
    cfg: TrainConfig,
    *,
    loss: LossConfig | None = None,
    val_s: ImageSet | None = None,
    val_t: ImageSet | None = None,
    run_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    dist_cfg: DistConfig | None = None,
    ctx: DistContext | None = None,
) -> History:
    """Train ``model`` (returning ``(latent, logits)``) with a method or the source-only baseline.

    Args:
        model: The classifier; trained in place.
        train_s: Labelled source training images.
        train_t: Unlabelled target training images (ignored by ``source_only``).
        cfg: Optimisation options.
        loss: Objective; ``loss.method`` picks the method (:mod:`sidda.methods`).
        val_s: Labelled source validation images (selection and early stopping).
        val_t: Target validation images (validation DA loss); labels are never read.
        run_dir: Folder for checkpoints and histories, or None to keep nothing on disk.
            With a folder, SIGTERM and SIGINT finish the current step, write ``last.pt`` and
            raise :class:`TrainingInterrupted`.
        callbacks: Called as ``cb(event, record)`` with event ``"step"`` or ``"epoch"``.
        resume: Continue from ``run_dir/checkpoints/last.pt`` (from the start if there is
            none yet); ``cfg``, ``loss`` and ``dist_cfg`` must be those the run was started
            with.
        dist_cfg: Precision, memory format and multi-process options (defaults: bf16 and
            channels_last on CUDA only).
        ctx: This process's rank and device, from :func:`~sidda.train.distributed.init_distributed`;
            None: one process on ``cfg.device``. Every rank calls ``fit`` with the same
            arguments (callbacks aside); only rank 0 writes to ``run_dir``.

    Returns:
        The :class:`History` (the same on every rank); the model holds the final weights.

    Raises:
        ConfigError: the model cannot serve the method (:meth:`LossConfig.check_model`).
        NonFiniteError: ``cfg.max_bad_steps`` consecutive steps were non-finite.
        TrainingInterrupted: SIGTERM or SIGINT arrived; ``last.pt`` holds the state.
    """
    if train_s.y is None:
        raise ValueError("the source training set needs labels")
    loss, dist_cfg = loss or LossConfig(), dist_cfg or DistConfig()
    ctx = ctx or DistContext(device=resolve_device(cfg.device))
    if ctx.device.type == "cpu":
        tune_cpu_allocator()  # reuse freed activation buffers: no page faults every step
    if loss.uses_target and train_t is None:
        raise ValueError(f"{loss.method} needs target training images; pass train_t or use "
                         "source_only")
    latent_dim, num_classes = _output_dims(model, train_s)
    loss.check_model(model)
    criterion = build_method(loss, latent_dim=latent_dim, num_classes=num_classes)
    if criterion is not None:
        criterion.attach(model)
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir that holds checkpoints/last.pt")
    n = ctx.world_size
    if cfg.batch_size < n or len(train_s) < n or (criterion is not None and len(train_t) < n):
        raise InputError(
            f"{n} processes need train.batch_size and both training sets of at least {n} "
            f"images (each rank takes a shard of every batch), got batch_size "
            f"{cfg.batch_size}; use fewer processes (--nproc_per_node) or more images"
        )
    run_dir = Path(run_dir) if run_dir is not None else None
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed + ctx.rank)  # dropout: an independent stream per rank
        config = {"train": dataclasses.asdict(cfg), "loss": dataclasses.asdict(loss),
                  "dist": dataclasses.asdict(dist_cfg)}
        saved = read_last(run_dir, config) if resume else None
        if saved is not None:  # into the plain model: DDP copies rank 0's weights when wrapping
            model.load_state_dict(saved["model"])
            if criterion is not None:
                criterion.load_state_dict(saved["loss"])
        net = prepare_model(model, ctx, sync_batchnorm=dist_cfg.sync_batchnorm,
                            channels_last=use_channels_last(dist_cfg, ctx.device))
        groups = [{"params": [p for p in unwrap(net).parameters() if p.requires_grad]}]
        if criterion is not None:
            criterion.to(ctx.device)
            groups += criterion.param_groups()
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=cfg.resolved_milestones(), gamma=cfg.lr_decay)
        ckpt = Checkpointer(run_dir, model=unwrap(net), optimizer=optimizer, scheduler=scheduler,
                            criterion=criterion, config=config, ctx=ctx)
        run = _Run(cfg, loss, dist_cfg, ctx, net, criterion, optimizer, scheduler, ckpt, run_dir,
                   callbacks, state=TrainState(patience_left=cfg.early_stopping))
        if resume and saved is None:
            logger.info("%s not found: starting from the beginning", resume_path(run_dir))
        elif saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            run.state, run.hist = TrainState(**saved["state"]), History(**saved["history"])
            restore_rng(saved, ctx, seed=cfg.seed)
            logger.info("resuming %s at epoch %d/%d, step %d", run_dir,
                        run.state.epoch + 1, cfg.epochs, run.state.step)
        if run.state.finished:
            logger.info("%s: the run has already finished", run_dir)
            return run.hist
        with SignalCatcher(enabled=run_dir is not None) as run.signals:
            _loop(run, train_s, train_t, val_s, val_t)
        refit = criterion is not None and train_t is not None and criterion.after_training(
            unwrap(net), train_t.x, batch_size=cfg.batch_size, device=ctx.device)
        last = run.hist.epochs[-1]
        run.hist.best["final"] = last["epoch"]
        ckpt.save_model("final", epoch=last["epoch"], record=last)
        if refit and ckpt.writes:  # the checkpoints saved before: their own weights' state
            refit_checkpoints(criterion, unwrap(net), resume_path(run_dir).parent, train_t.x,
                              batch_size=cfg.batch_size, device=ctx.device)
        run.state.finished = True
        run.save_last()
        return run.hist
    finally:
        torch.set_num_threads(threads)


def _loop(run: _Run, train_s: ImageSet, train_t: ImageSet | None, val_s: ImageSet | None,
          val_t: ImageSet | None) -> None:
    """The epochs from ``run.state`` on; updates ``run.state`` and ``run.hist`` in place."""
    cfg, state, hist, criterion, ctx = run.cfg, run.state, run.hist, run.criterion, run.ctx
    n_steps = math.ceil(len(train_s) / cfg.batch_size)
    align_steps = max(1, (cfg.epochs - cfg.warmup) * n_steps)  # steps of the alignment phase

    def load(images: ImageSet, idx: Tensor) -> Tensor:  # this rank's shard, on its device
        return to_device(images.x[idx], ctx.device, channels_last=run.channels_last)

    def load_source(idx_s: Tensor, my_s: Tensor, epoch: int, step: int) -> Tensor:
        if not cfg.augment:
            return load(train_s, my_s)
        rows = shard_indices(torch.arange(len(idx_s)), ctx)  # this rank's rows of the batch
        x = augment_batch(train_s.x[my_s], cfg.augment, seed=cfg.seed, epoch=epoch, step=step,
                          rows=rows, n=len(idx_s))
        return to_device(x, ctx.device, channels_last=run.channels_last)

    stream_t = None if not run.adapting else cycle_batches(
        len(train_t), cfg.batch_size, seed=cfg.seed, start=state.stream_t)
    while state.epoch < cfg.epochs and not hist.stopped_early:
        epoch, t0 = state.epoch, time.perf_counter()
        run.net.train()
        aligning = run.adapting and epoch >= cfg.warmup
        phase = "source_only" if not run.adapting else (run.loss.method if aligning
                                                        else "warmup")
        lr = run.optimizer.param_groups[0]["lr"]
        first = len(hist.steps) - state.step  # this epoch's rows start here (a skipped small
        # batch below can only be the last of an epoch, so it never comes before a resume)
        order = batches(len(train_s), cfg.batch_size, seed=cfg.seed, epoch=epoch)
        for step in range(state.step, n_steps):
            idx_s = order[step]  # the global batches: the same on every rank
            idx_t = next(stream_t) if stream_t is not None else None
            if len(idx_s) < ctx.world_size:  # a last batch too small to give each rank an image
                state.step, state.stream_t = step + 1, state.stream_t + (stream_t is not None)
                continue
            my_s = shard_indices(idx_s, ctx)
            x_s, y_s = load_source(idx_s, my_s, epoch, step), to_device(train_s.y[my_s],
                                                                        ctx.device)
            x_t = load(train_t, shard_indices(idx_t, ctx)) if aligning else None
            row = {"epoch": epoch + 1, "step": epoch * n_steps + step, "phase": phase, "lr": lr}
            progress = ((epoch - cfg.warmup) * n_steps + step) / align_steps if aligning else 0.0
            row.update(train_step(run.net, x_s, y_s, x_t, criterion=criterion,
                                  optimizer=run.optimizer, grad_clip=cfg.grad_clip, ctx=ctx,
                                  dist_cfg=run.dist, progress=progress))
            if criterion is not None:
                row.update(criterion.log_state())
            hist.steps.append(row)
            state.step, state.stream_t = step + 1, state.stream_t + (stream_t is not None)
            for cb in run.callbacks:
                cb("step", row)
            try:
                count_bad_step(row, state, cfg=cfg, loss=run.loss)
            except NonFiniteError:
                run.write_history()
                raise
            run.stop_if_signalled(n_steps)
            every = cfg.checkpoint_every
            if every and (row["step"] + 1) % every == 0 and step + 1 < n_steps:
                run.save_last()
        with warnings.catch_warnings():  # no optimizer step in this process yet: every step
            # of the epoch was skipped, or done before a resume; the schedule is unaffected
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            run.scheduler.step()
        _end_epoch(run, hist.steps[first:], epoch=epoch, phase=phase, lr=lr, t0=t0,
                   val_s=val_s, val_t=val_t)
        state.epoch, state.step = epoch + 1, 0
        run.write_history()
        run.save_last()
        if state.epoch < cfg.epochs and not hist.stopped_early:
            run.stop_if_signalled(n_steps)


def _end_epoch(run: _Run, rows: list[dict], *, epoch: int, phase: str, lr: float, t0: float,
               val_s: ImageSet | None, val_t: ImageSet | None) -> None:
    """Epoch means, validation, model selection, logging and early stopping.

    ``epoch`` is the 0-based index of the epoch that ends (``TrainState.epoch``); the record,
    ``History.best`` and the checkpoints number it from 1 (``epoch + 1``).

    Rank 0 validates alone, on the unwrapped model (a forward pass of the DDP wrapper may start
    collectives), and sends the result to the other ranks: every rank then takes the same
    selection and early-stopping decisions, so all of them stop together.
    """
    cfg, state, hist, criterion = run.cfg, run.state, run.hist, run.criterion
    good = [r for r in rows if not r["skipped"]]
    number = epoch + 1  # what users see: history.csv, the checkpoints, the log
    rec = {"epoch": number, "phase": phase, "lr": lr}
    logged = ["total", "ce", "da", "eta_1", "eta_2", "blur", "max_distance"]
    logged += sorted({k for r in good for k, v in r.items()
                      if k not in logged and k not in _STEP_BOOK and isinstance(v, float)})
    for key in logged:
        rec["train_" + key if key in ("total", "ce", "da") else key] = _mean(
            [r.get(key) for r in good]
        )
    rec["skipped_steps"] = len(rows) - len(good)
    aligning = run.adapting and epoch >= cfg.warmup
    if val_s is not None and len(val_s):
        val = validate(
            unwrap(run.net), val_s, val_t, criterion=criterion, with_da=aligning,
            batch_size=cfg.batch_size, device=run.device,
        ) if run.ctx.is_main else None
        rec.update(broadcast_object(val, run.ctx))
    rec["seconds"] = time.perf_counter() - t0
    hist.epochs.append(rec)

    eligible = not run.adapting or epoch >= cfg.warmup
    improved_loss = False
    if eligible and "val_acc_s" in rec:
        if rec["val_acc_s"] > state.best_acc:
            state.best_acc = rec["val_acc_s"]
            hist.best["best_val_acc"] = number
            run.ckpt.save_model("best_val_acc", epoch=number, record=rec)
        if rec["val_total"] < state.best_loss:
            state.best_loss, improved_loss = rec["val_total"], True
            hist.best["best_val_loss"] = number
            run.ckpt.save_model("best_val_loss", epoch=number, record=rec)
    if cfg.keep_epoch_checkpoints:
        run.ckpt.save_model(epoch_checkpoint(number), epoch=number, record=rec)
    logger.info(
        "epoch %d/%d %s  loss %s  ce %s  da %s  val_acc %s  (%.1fs)%s",
        number, cfg.epochs, phase, _fmt(rec["train_total"]), _fmt(rec["train_ce"]),
        _fmt(rec["train_da"], ".4g"), _fmt(rec.get("val_acc_s")), rec["seconds"],
        f"  {rec['skipped_steps']} steps skipped" if rec["skipped_steps"] else "",
    )
    for cb in run.callbacks:
        cb("epoch", rec)
    if eligible and state.patience_left is not None and "val_total" in rec:
        state.patience_left = cfg.early_stopping if improved_loss else state.patience_left - 1
        if state.patience_left <= 0:
            logger.info("early stopping after epoch %d: no improvement in %d epochs",
                        number, cfg.early_stopping)
            hist.stopped_early = True
