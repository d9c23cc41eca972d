"""Recovery: how a run survives interruption and numerical failure (``docs/recovery.md``).

* Checkpoints (:class:`Checkpointer`): the model files, and ``last.pt`` for resuming.
* Signals (:class:`SignalCatcher`): SIGTERM and SIGINT finish the current step, write
  ``last.pt`` and end the run with :class:`TrainingInterrupted` (exit status 128 + signal).
* Numerical failure (:func:`count_bad_step`): a step with a non-finite latent, loss or gradient
  is skipped with a warning; ``train.max_bad_steps`` in a row raise :class:`NonFiniteError`.
  Non-finite weights are never written.

``last.pt`` is written atomically at the end of every epoch, every ``train.checkpoint_every``
steps if set, when SIGTERM or SIGINT arrives and when the run finishes. It holds everything
the remaining steps depend on, so that a resumed run repeats the uninterrupted one bit for bit
on the CPU:

* the model, optimizer (AdamW moments), scheduler and loss (the etas) state;
* the position: epoch, steps of that epoch done, target batches drawn (:class:`TrainState`);
* selection and early stopping: best values so far, patience left, consecutive bad steps;
* the history logged so far (``history.csv`` and ``history_steps.csv`` are rewritten from it);
* the python, NumPy and torch (and CUDA) random states at that step boundary, of every rank
  when several processes train (:func:`restore_rng`);
* the train, loss and dist config it was written with (a resume must use the same).

With several ranks (:mod:`sidda.train.distributed`) only rank 0 writes; every rank takes part in
the checks (non-finite weights, signals), so that all of them stop together, and every rank
reads ``last.pt`` when resuming, so the run directory must be visible to all of them.

The data order needs no state: an epoch's batches depend only on (seed, epoch) and the target
stream restarts at the saved batch index (:func:`~sidda.datasets.batches`,
:func:`~sidda.datasets.cycle_batches`). Validation and checkpointing draw no random numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np
import torch
from torch import nn

from sidda.errors import InputError
from sidda.methods.config import LossConfig
from sidda.models import model_state
from sidda.runs import RESUME_CHECKPOINT, load_checkpoint, save_checkpoint
from sidda.train.collectives import DistContext, gather_object, max_over_ranks
from sidda.train.config import TrainConfig

__all__ = [
    "Checkpointer",
    "NonFiniteError",
    "SignalCatcher",
    "TrainState",
    "TrainingInterrupted",
    "count_bad_step",
    "epoch_checkpoint",
    "read_last",
    "read_state",
    "restore_rng",
    "resume_path",
]

logger = logging.getLogger(__name__)

FORMAT = 1  # version of the last.pt layout
#: Options that may differ between the interrupted and the resumed run (none changes the
#: numbers on one device, except the thread count, which can change float summation order).
_MAY_DIFFER = ("device", "threads", "checkpoint_every", "max_bad_steps", "timeout_s",
               "keep_epoch_checkpoints", "log")


@dataclass
class TrainState:
    """Where a run stands, at a step boundary.

    Attributes:
        epoch: Epochs done: the 0-based index of the epoch in progress (whose 1-based number,
            in the histories and checkpoints, is ``epoch + 1``); ``train.epochs`` once every
            epoch is done.
        step: Steps of ``epoch`` already taken (0 at an epoch boundary).
        stream_t: Target batches drawn so far (the target stream restarts here).
        best_acc: Best source validation accuracy after the warm-up.
        best_loss: Best validation total loss after the warm-up.
        patience_left: Early-stopping epochs left, or None without early stopping.
        bad_steps: Consecutive steps skipped for a non-finite loss or gradient.
        finished: The final checkpoint is written; there is nothing left to do.
    """

    epoch: int = 0
    step: int = 0
    stream_t: int = 0
    best_acc: float = -1.0
    best_loss: float = math.inf
    patience_left: int | None = None
    bad_steps: int = 0
    finished: bool = False


def epoch_checkpoint(epoch: int) -> str:
    """The name of the model checkpoint of ``epoch`` (1-based) that
    ``train.keep_epoch_checkpoints`` keeps: ``checkpoints/<name>.pt``.

    >>> epoch_checkpoint(7)
    'epoch_0007'
    """
    return f"epoch_{epoch:04d}"


def resume_path(run_dir: str | Path) -> Path:
    """``run_dir/checkpoints/last.pt``."""
    return Path(run_dir) / "checkpoints" / f"{RESUME_CHECKPOINT}.pt"


def _rng_state(device: torch.device) -> dict:
    """This process's random states as tensors and plain data (what a checkpoint may hold)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, 625 ints, None)
        "numpy": {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(saved: dict | tuple | list) -> tuple:
    """The argument of ``np.random.set_state`` for a saved NumPy state: the dict that
    :func:`_rng_state` writes, or the tuple of an older ``last.pt`` (converted by
    ``sidda runs upgrade``: its key a tensor or an array)."""
    if isinstance(saved, dict):
        saved = (saved["bit_generator"], saved["key"], saved["pos"], saved["has_gauss"],
                 saved["gauss"])
    name, key, pos, has_gauss, gauss = saved
    key = key.numpy() if torch.is_tensor(key) else np.asarray(key)
    return str(name), key.astype(np.uint32), int(pos), int(has_gauss), float(gauss)


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def restore_rng(ckpt: dict, ctx: DistContext, *, seed: int) -> None:
    """Restore this rank's random states from a ``last.pt`` dict (:func:`read_last`).

    ``last.pt`` holds the states of every rank that wrote it. A resume with as many ranks
    gives each rank its own state back, so it repeats the uninterrupted run. With another
    number of ranks, rank 0 takes rank 0's state and every other rank r re-seeds torch from
    (``seed``, r, epoch, step): deterministic, but not the stream the interrupted run would
    have drawn (dropout masks differ from an uninterrupted run).
    """
    states = ckpt.get("rng_ranks") or [ckpt["rng"]]
    if len(states) == ctx.world_size:
        _set_rng_state(states[ctx.rank])
        return
    state = ckpt["state"]
    if ctx.is_main:
        _set_rng_state(states[0])
        logger.warning(
            "last.pt was written by %d process(es), this run has %d: ranks other than 0 "
            "re-seed their random numbers, so dropout differs from an uninterrupted run",
            len(states), ctx.world_size)
    else:
        entropy = [seed, ctx.rank, state["epoch"], state["step"]]
        torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))


class NonFiniteError(RuntimeError):
    """Training produced NaN or inf: too many consecutive bad steps, or non-finite weights."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped training after the current step; ``last.pt`` was written.

    Attributes:
        signum: The signal.
        run_dir: The run directory to resume.
        epoch: The epoch in progress (1-based, as in ``history.csv``).
        step: Steps of that epoch already taken.
    """

    def __init__(
        self, signum: int, *, run_dir: Path | None, epoch: int, epochs: int, step: int,
        n_steps: int,
    ) -> None:
        self.signum, self.run_dir, self.epoch, self.step = signum, run_dir, epoch, step
        where = (f"epoch {epoch}/{epochs} after step {step} of {n_steps}" if step else
                 f"the start of epoch {epoch}/{epochs}")
        self.what = f"interrupted by {signal.Signals(signum).name} at {where}"
        hint = f"; resume with: sidda train --resume {run_dir}" if run_dir is not None else ""
        super().__init__(self.what + hint)

    def with_hint(self, hint: str) -> TrainingInterrupted:
        """The same interruption, with ``hint`` (what to run to continue) in its message, e.g.
        rerunning ``sidda compare``, which resumes its interrupted run."""
        self.args = (f"{self.what} in {self.run_dir}; {hint}",)
        return self

    @property
    def exit_status(self) -> int:
        """``128 + signum`` (143 for SIGTERM, 130 for SIGINT), as shells and schedulers read it."""
        return 128 + self.signum


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def count_bad_step(
    row: dict, state: TrainState, *, cfg: TrainConfig, loss: LossConfig
) -> None:
    """Count consecutive skipped steps; warn about each, raise after too many.

    Args:
        row: The step's logged values; ``row["skipped"]`` names what was non-finite, or None.
        state: Holds the count (``bad_steps``), reset by a good step.
        cfg: ``max_bad_steps``, and ``lr`` and ``grad_clip`` for the message.
        loss: ``blur_floor`` for the message.

    Raises:
        NonFiniteError: ``cfg.max_bad_steps`` steps in a row were skipped; the message names
            the likely cause and the settings to change.
    """
    if not row["skipped"]:
        state.bad_steps = 0
        return
    state.bad_steps += 1
    where = f"epoch {row['epoch']} step {row['step']}"
    logger.warning(
        "%s: non-finite %s (ce %s, da %s, total %s, grad norm %s; blur %s, max latent distance "
        "%s); step skipped, %d in a row (the run stops at %d)", where, row["skipped"],
        _fmt(row["ce"]), _fmt(row["da"]), _fmt(row["total"]), _fmt(row["grad_norm"]),
        _fmt(row["blur"]), _fmt(row["max_distance"]), state.bad_steps, cfg.max_bad_steps,
    )
    if state.bad_steps >= cfg.max_bad_steps:
        raise NonFiniteError(
            f"{state.bad_steps} steps in a row had non-finite {row['skipped']} (the last at "
            f"{where}, max latent distance {_fmt(row['max_distance'])}); likely cause: the "
            "latents are blowing up (the Sinkhorn term overflows) or the learning rate is too "
            f"high. Lower train.lr (now {cfg.lr:g}), tighten train.grad_clip (now "
            f"{cfg.grad_clip:g}){_floor_hint(loss)}, then start a new run (--force or another "
            "name). No non-finite weights were saved."
        )


def _floor_hint(loss: LossConfig) -> str:
    if loss.blur_floor is None:
        return ""
    return f" or raise loss.blur_floor (now {loss.blur_floor:g})"


class Checkpointer:
    """Writes a run's checkpoints and reads ``last.pt`` back; does nothing without a folder.

    Args:
        run_dir: The run directory, or None (nothing is kept on disk).
        model: The model being trained.
        optimizer: Its optimizer.
        scheduler: Its learning-rate scheduler.
        criterion: The SIDDA loss (holds the etas), or None for the baseline.
        config: The train, loss and dist config as plain dicts (``{"train": ..., ...}``).
        ctx: This process's rank and device (CUDA random states are kept for a CUDA device).
            Every rank makes the same calls; only rank 0 writes.
    """

    def __init__(
        self,
        run_dir: Path | None,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        criterion: nn.Module | None,
        config: dict,
        ctx: DistContext | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.criterion, self.config, self.ctx = criterion, config, ctx or DistContext()
        self.writes = run_dir is not None and self.ctx.is_main
        if self.writes:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    def _loss_state(self) -> dict | None:
        if self.criterion is None:
            return None
        return {k: v.detach().cpu().clone() for k, v in self.criterion.state_dict().items()}

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` if any weight (model or etas) is NaN or inf.

        With several ranks, on every rank as soon as one of them has such a weight.
        """
        named = list(self.model.state_dict().items())
        if self.criterion is not None:
            named += [(f"loss.{k}", v) for k, v in self.criterion.state_dict().items()]
        bad = next((name for name, t in named
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if max_over_ranks(bad is not None, self.ctx):
            where = f"weight {bad}" if bad is not None else "a weight of another rank"
            raise NonFiniteError(
                f"{where} became non-finite, so it was not saved (the checkpoints on disk "
                "stay as they were); lower train.lr or tighten train.grad_clip and start a new "
                "run"
            )

    def save_model(self, name: str, *, epoch: int, record: dict) -> None:
        """Write ``checkpoints/<name>.pt`` (``final``, ``best_val_acc``, ``best_val_loss``, or
        :func:`epoch_checkpoint`): the model, the loss state, ``epoch`` (1-based) and the
        epoch's record."""
        if self.run_dir is None:
            return
        self.check_finite()
        if not self.writes:
            return
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.pt", {
            "model": model_state(self.model), "loss": self._loss_state(), "epoch": epoch,
            "record": record,
        })

    def save_last(self, state: TrainState, history: dict) -> None:
        """Write ``last.pt``: everything a resume needs, at the current step boundary."""
        if self.run_dir is None:
            return
        self.check_finite()
        rng = gather_object(_rng_state(self.ctx.device), self.ctx)  # every rank's, in order
        if not self.writes:
            return
        save_checkpoint(resume_path(self.run_dir), {
            "format": FORMAT,
            "model": model_state(self.model),
            "loss": self._loss_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": dataclasses.asdict(state),
            "history": history,
            "config": self.config,
            "rng": rng[0],
            "rng_ranks": rng if len(rng) > 1 else None,
            "world_size": len(rng),
            "epoch": state.epoch,
        })


def read_last(run_dir: str | Path, config: dict) -> dict | None:
    """Read ``run_dir/checkpoints/last.pt`` for a resume, and check it fits ``config``.

    The caller loads the parts into the model, the loss, the optimizer and the scheduler, and
    restores the random states last (:func:`restore_rng`).

    Returns:
        The checkpoint dict, or None if the run has no ``last.pt`` yet.

    Raises:
        ValueError: the checkpoint is unreadable, or was written with another config (only
            the device, the thread count and a few such options may differ).
    """
    path = resume_path(run_dir)
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != FORMAT or "state" not in ckpt:
        raise InputError(f"{path}: not a resumable checkpoint of this sidda version")
    _check_same_config(ckpt["config"], config, path)
    return ckpt


def read_state(run_dir: str | Path) -> TrainState | None:
    """The :class:`TrainState` of ``last.pt``, or None if the run has none yet."""
    path = resume_path(run_dir)
    if not path.is_file():
        return None
    return TrainState(**load_checkpoint(path)["state"])


def _check_same_config(saved: dict, now: dict, path: Path) -> None:
    diffs = [  # a section or key the checkpoint lacks (written before it existed) is not
        # checked: the run's config.yaml gives it its default, as it did then
        f"{section}.{k}: {saved[section].get(k)!r} in the checkpoint, {v!r} now"
        for section in sorted(set(saved) & set(now))
        for k, v in now[section].items()
        if k not in _MAY_DIFFER and k in saved[section] and saved[section][k] != v
    ]
    if diffs:
        raise InputError(
            f"{path} was written with another config ({'; '.join(diffs)}); resume with the "
            "run's own config.yaml (sidda train --resume RUN_DIR), or start a new run"
        )


class SignalCatcher:
    """Turn SIGTERM and SIGINT into a flag that the training loop reads between steps.

    Installed only in the main thread (where Python delivers signals) and only while the
    ``with`` block runs; the previous handlers are restored afterwards. A second signal stops
    at once with :class:`KeyboardInterrupt` (every file on disk is still complete, since every
    write is atomic).

    Attributes:
        signum: The first signal received, or None.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalCatcher:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning("received %s: finishing the current step, then saving a checkpoint "
                       "(send it again to stop at once)", signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()
