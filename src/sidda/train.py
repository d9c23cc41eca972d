"""One training loop for the source-only baseline and for SIDDA (docs/method.md, "Training").

Per epoch, the source defines the steps (every source image once, shuffled); the target
stream cycles independently, so the two domains may have any sizes. During the ``warmup``
epochs the objective is source cross-entropy alone. After it, SIDDA makes one forward pass on
the concatenated batch ``cat([x_s, x_t])`` (BatchNorm sees both domains, as in the paper) and
minimises :class:`~sidda.losses.SIDDALoss`. Both methods use AdamW, MultiStepLR (stepped per
epoch) and gradient clipping at 10 (the baseline is optimisation-matched, unlike the authors'
scripts).

Validation, every epoch, uses the held-out source split (accuracy, CE) and, for SIDDA after
the warm-up, the DA term between source- and target-validation latents (batch pairs, dynamic
blur). Whenever target validation images exist (the baseline too), two alignment diagnostics
are logged: ``val_js_paper`` (the authors' paired-row JS heuristic) and ``val_sinkhorn_fixed``
(Sinkhorn divergence at a fixed blur, a proper two-sample distance); see
:mod:`sidda.alignment`. Model selection never reads target labels:

* ``best_val_acc``: highest source validation accuracy after the warm-up (ties: earlier);
* ``best_val_loss``: lowest validation CE + DA (unweighted, comparable across epochs) after
  the warm-up;
* ``final``: the last epoch.

Early stopping (``early_stopping`` = patience) counts post-warm-up epochs without improvement
of the validation total loss, and resets on improvement.

Recovery (:mod:`sidda.recovery`, ``docs/recovery.md``): ``fit(..., resume=True)`` continues
from ``checkpoints/last.pt`` bit for bit on the CPU; SIGTERM and SIGINT save it and raise
:class:`TrainingInterrupted`; a step with a non-finite latent, loss or gradient is skipped, and
``max_bad_steps`` of them in a row raise :class:`NonFiniteError`.

Several processes and the GPU (:mod:`sidda.distributed`, ``docs/distributed.md``): given a
:class:`~sidda.distributed.DistContext` from ``init_distributed`` (torchrun), every rank runs
this same loop on its shard of each global batch, with the model in DistributedDataParallel;
the logged values, the skip decisions and the stops are the same on every rank, rank 0 alone
validates (then shares the result) and writes. On CUDA the forward pass runs under bf16
autocast and the loss in float32 (:class:`~sidda.distributed.DistConfig`).
"""

from __future__ import annotations

import contextlib
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
from torch.nn import functional as F

from sidda.alignment import fixed_blur_sinkhorn, paper_js_distance
from sidda.datasets import ImageSet, batches, cycle_batches
from sidda.distributed import (
    DEVICE_PATTERN,
    DistConfig,
    DistContext,
    broadcast_object,
    check_device,
    max_over_ranks,
    prepare_model,
    shard_indices,
    to_device,
    unwrap,
    use_channels_last,
)
from sidda.errors import InputError, short_repr
from sidda.losses import sinkhorn_divergence
from sidda.methods import DAMethod, LossConfig, StepOutputs, build_method
from sidda.methods.sidda import SIDDAMethod
from sidda.models import tune_cpu_allocator
from sidda.recovery import (
    Checkpointer,
    NonFiniteError,
    SignalCatcher,
    TrainingInterrupted,
    TrainState,
    count_bad_step,
    read_last,
    restore_rng,
    resume_path,
)
from sidda.runs import History
from sidda.step import train_step

__all__ = ["MAX_EPOCHS", "History", "NonFiniteError", "TrainConfig", "TrainingInterrupted",
           "fit", "resolve_device"]

logger = logging.getLogger(__name__)

#: Most epochs a run may ask for (a typo such as 10**10 would otherwise run for ever).
MAX_EPOCHS = 100_000


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation options (the paper's values are the defaults).

    Attributes:
        epochs: Number of epochs, 1 to :data:`MAX_EPOCHS`.
        warmup: Epochs of cross-entropy only before the alignment term starts.
        batch_size: Images per domain per step (128 source + 128 target).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        milestones: Epochs at which the learning rate is multiplied by ``lr_decay``; None gives
            the authors' proportions, ``[epochs // 2, 4 * epochs // 5]`` ([25, 40] for 50).
        lr_decay: MultiStepLR factor.
        grad_clip: Max gradient norm of the model parameters (the etas are not clipped).
        early_stopping: Patience in post-warm-up epochs, or None for no early stopping.
        seed: Seeds the split, the data order, the initial weights and dropout.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (under torchrun, ``"cuda"``
            puts rank r on ``cuda:LOCAL_RANK``).
        threads: torch intra-op threads on the CPU, or None to keep torch's choice.
        checkpoint_every: Also write ``last.pt`` every this many steps, or None for epoch ends
            only (enough for short epochs; long epochs on a pre-emptible machine want it).
        max_bad_steps: Consecutive steps with a non-finite loss or gradient (each skipped)
            after which the run stops with an error.
    """

    epochs: int = 50
    warmup: int = 5
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 1e-3
    milestones: tuple[int, ...] | None = None
    lr_decay: float = 0.1
    grad_clip: float = 10.0
    early_stopping: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    checkpoint_every: int | None = None
    max_bad_steps: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ValueError(f"train.epochs must lie in 1..{MAX_EPOCHS}, got {self.epochs}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(
                f"train.device must be 'cpu', 'cuda', 'cuda:<i>' or 'auto', got "
                f"{short_repr(self.device)}"
            )
        if not 0 <= self.warmup < self.epochs:
            raise ValueError(
                f"train.warmup must be >= 0 and shorter than train.epochs ({self.epochs}), got "
                f"{self.warmup}; SIDDA aligns the domains only after the warm-up"
            )
        if self.batch_size < 2:
            raise ValueError(f"train.batch_size must be >= 2, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(
                f"train.lr must be a positive number, got {self.lr}; the paper uses 1e-2"
            )
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"train.weight_decay must be a number >= 0, got {self.weight_decay}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"train.lr_decay must lie in (0, 1], got {self.lr_decay}")
        if not self.grad_clip > 0:
            raise ValueError(f"train.grad_clip must be > 0, got {self.grad_clip}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ValueError(
                f"train.early_stopping must be >= 1 or null (off), got {self.early_stopping}"
            )
        if self.milestones is not None:
            object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
            if list(self.milestones) != sorted(set(self.milestones)) or any(
                m < 1 for m in self.milestones
            ):
                raise ValueError(
                    "train.milestones must be increasing positive epochs, got "
                    f"{short_repr(self.milestones)}"
                )
        if not 0 <= self.seed < 2**63 - 1:
            raise ValueError(f"train.seed must lie in [0, 2**63 - 1), got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"train.threads must be >= 1 or null, got {self.threads}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(
                f"train.checkpoint_every must be >= 1 (steps) or null (epoch ends only), got "
                f"{self.checkpoint_every}"
            )
        if self.max_bad_steps < 1:
            raise ValueError(f"train.max_bad_steps must be >= 1, got {self.max_bad_steps}")

    def resolved_milestones(self) -> list[int]:
        """The learning-rate milestones actually used."""
        if self.milestones is not None:
            return list(self.milestones)
        return [max(1, self.epochs // 2), max(2, 4 * self.epochs // 5)]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; anything else is checked and returned.

    Raises:
        InputError: an unknown device name, or a GPU that is not there
            (:func:`~sidda.distributed.check_device`).
    """
    return check_device(name)


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
            signum, run_dir=self.run_dir, epoch=self.state.epoch, epochs=self.cfg.epochs,
            step=self.state.step, n_steps=n_steps)


#: Step columns that are bookkeeping, not values to average per epoch.
_STEP_BOOK = frozenset({"epoch", "step", "phase", "lr", "grad_norm", "skipped"})


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


@torch.no_grad()
def _forward_all(
    model: nn.Module, images: ImageSet, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    zs, ls = [], []
    for idx in torch.arange(len(images)).split(batch_size):
        z, logits = model(images.x[idx].to(device, non_blocking=True))
        zs.append(z.float())
        ls.append(logits.float())
    return torch.cat(zs), torch.cat(ls)  # (N, D), (N, K)


def _check_finite(z: Tensor, logits: Tensor, domain: str) -> None:
    """Stop a run whose validation outputs are NaN or inf: the weights have diverged, or the
    images hold values the network cannot take (e.g. pixels of 1e30)."""
    if not (torch.isfinite(z).all() and torch.isfinite(logits).all()):
        raise NonFiniteError(
            f"the {domain} validation latents or logits are NaN or inf: training diverged, or "
            "the images hold values far outside the usual range (check them with `sidda data "
            "check`); lower train.lr, tighten train.grad_clip, or rescale the images"
        )


@torch.no_grad()
def _validate(
    model: nn.Module,
    val_s: ImageSet,
    val_t: ImageSet | None,
    *,
    criterion: DAMethod | None,
    with_da: bool,
    batch_size: int,
    device: torch.device,
) -> dict:
    """Source accuracy and CE; for SIDDA after warm-up the DA loss on batch pairs; always the
    two alignment diagnostics when target validation images exist. Target labels unused.
    Draws no random numbers (``eval()`` mode; a fixed-seed batch pairing)."""
    model.eval()
    z_s, logits = _forward_all(model, val_s, batch_size, device)
    _check_finite(z_s, logits, "source")
    y_s = val_s.y.to(device)
    out = {
        "val_acc_s": float((logits.argmax(1) == y_s).float().mean()),
        "val_ce": float(F.cross_entropy(logits, y_s)),
        "val_da": None,
    }
    if val_t is not None and len(val_t):
        stats = getattr(criterion, "domain_stats", None)
        with stats.target() if stats is not None else contextlib.nullcontext():
            z_t, logits_t = _forward_all(model, val_t, batch_size, device)
        _check_finite(z_t, logits_t, "target")
        if with_da and criterion is not None:
            # the training objective's DA term on (source batch i, target batch i) pairs
            da = []
            stream = cycle_batches(len(z_t), batch_size, seed=0)
            for idx in torch.arange(len(z_s)).split(batch_size):
                jdx = next(stream)
                da.append(_validation_da(criterion, StepOutputs(
                    z_s=z_s[idx], z_t=z_t[jdx], logits_s=logits[idx], logits_t=logits_t[jdx],
                    y_s=y_s[idx], progress=1.0)))
            out["val_da"] = float(np.mean(da))
        out["val_js_paper"] = float(paper_js_distance(z_s, z_t))
        out["val_sinkhorn_fixed"] = float(fixed_blur_sinkhorn(z_s, z_t))
    out["val_total"] = out["val_ce"] + (out["val_da"] or 0.0)
    return out


def _validation_da(criterion: DAMethod, batch: StepOutputs) -> float:
    """The alignment term of one validation batch pair (no side effects on the method)."""
    if isinstance(criterion, SIDDAMethod):
        sk, a, b = criterion.loss.sinkhorn, batch.z_s, batch.z_t
        return float(sinkhorn_divergence(a, b, blur=sk.resolve_blur(a, b), scaling=sk.scaling,
                                         backend=sk.backend))
    was = criterion.training
    criterion.eval()
    try:
        return float(criterion(batch).da)
    finally:
        criterion.train(was)


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
    """Train ``model`` (returning ``(latent, logits)``) with SIDDA or the source-only baseline.

    Args:
        model: The classifier; trained in place.
        train_s: Labelled source training images.
        train_t: Unlabelled target training images (ignored by ``source_only``).
        cfg: Optimisation options.
        loss: Objective; ``loss.method`` picks SIDDA or the baseline.
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
            channels_last on CUDA only, the global Sinkhorn term).
        ctx: This process's rank and device, from :func:`~sidda.distributed.init_distributed`;
            None: one process on ``cfg.device``. Every rank calls ``fit`` with the same
            arguments (callbacks aside); only rank 0 writes to ``run_dir``.

    Returns:
        The :class:`History` (the same on every rank); the model holds the final weights.

    Raises:
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
        last = run.hist.epochs[-1]
        run.hist.best["final"] = last["epoch"]
        ckpt.save_model("final", epoch=last["epoch"], record=last)
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

    stream_t = None if criterion is None else cycle_batches(
        len(train_t), cfg.batch_size, seed=cfg.seed, start=state.stream_t)
    while state.epoch < cfg.epochs and not hist.stopped_early:
        epoch, t0 = state.epoch, time.perf_counter()
        run.net.train()
        aligning = criterion is not None and epoch >= cfg.warmup
        phase = "source_only" if criterion is None else (run.loss.method if aligning
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
            x_s, y_s = load(train_s, my_s), to_device(train_s.y[my_s], ctx.device)
            x_t = load(train_t, shard_indices(idx_t, ctx)) if aligning else None
            row = {"epoch": epoch, "step": epoch * n_steps + step, "phase": phase, "lr": lr}
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

    Rank 0 validates alone, on the unwrapped model (a forward pass of the DDP wrapper may start
    collectives), and sends the result to the other ranks: every rank then takes the same
    selection and early-stopping decisions, so all of them stop together.
    """
    cfg, state, hist, criterion = run.cfg, run.state, run.hist, run.criterion
    good = [r for r in rows if not r["skipped"]]
    rec = {"epoch": epoch, "phase": phase, "lr": lr}
    logged = ["total", "ce", "da", "eta_1", "eta_2", "blur", "max_distance"]
    logged += sorted({k for r in good for k, v in r.items()
                      if k not in logged and k not in _STEP_BOOK and isinstance(v, float)})
    for key in logged:
        rec["train_" + key if key in ("total", "ce", "da") else key] = _mean(
            [r.get(key) for r in good]
        )
    rec["skipped_steps"] = len(rows) - len(good)
    aligning = criterion is not None and epoch >= cfg.warmup
    if val_s is not None and len(val_s):
        val = _validate(
            unwrap(run.net), val_s, val_t, criterion=criterion, with_da=aligning,
            batch_size=cfg.batch_size, device=run.device,
        ) if run.ctx.is_main else None
        rec.update(broadcast_object(val, run.ctx))
    rec["seconds"] = time.perf_counter() - t0
    hist.epochs.append(rec)

    eligible = criterion is None or epoch >= cfg.warmup
    improved_loss = False
    if eligible and "val_acc_s" in rec:
        if rec["val_acc_s"] > state.best_acc:
            state.best_acc = rec["val_acc_s"]
            hist.best["best_val_acc"] = epoch
            run.ckpt.save_model("best_val_acc", epoch=epoch, record=rec)
        if rec["val_total"] < state.best_loss:
            state.best_loss, improved_loss = rec["val_total"], True
            hist.best["best_val_loss"] = epoch
            run.ckpt.save_model("best_val_loss", epoch=epoch, record=rec)
    logger.info(
        "epoch %d/%d %s  loss %s  ce %s  da %s  val_acc %s  (%.1fs)%s",
        epoch + 1, cfg.epochs, phase, _fmt(rec["train_total"]), _fmt(rec["train_ce"]),
        _fmt(rec["train_da"], ".4g"), _fmt(rec.get("val_acc_s")), rec["seconds"],
        f"  {rec['skipped_steps']} steps skipped" if rec["skipped_steps"] else "",
    )
    for cb in run.callbacks:
        cb("epoch", rec)
    if eligible and state.patience_left is not None and "val_total" in rec:
        state.patience_left = cfg.early_stopping if improved_loss else state.patience_left - 1
        if state.patience_left <= 0:
            logger.info("early stopping after epoch %d: no improvement in %d epochs",
                        epoch + 1, cfg.early_stopping)
            hist.stopped_early = True
