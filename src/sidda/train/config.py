"""The options of a training run: :class:`TrainConfig` (optimisation, selection, recovery) and
:class:`DistConfig` (processes, precision, memory format; ``docs/distributed.md``).

Plain frozen dataclasses with their checks, at the bottom of :mod:`sidda.train`: every other
module of the package (and :mod:`sidda.config`, which reads them from YAML) imports them from
here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sidda.errors import short_repr

__all__ = ["AUGMENTATIONS", "DA_SCOPES", "DEVICE_PATTERN", "LOGGERS", "MAX_EPOCHS",
           "DistConfig", "TrainConfig"]

#: ``dist.da_scope`` values: the method on the global batch (kept so that older configs load).
DA_SCOPES = ("global",)
#: ``train.augment`` names (:mod:`sidda.train.augment`).
AUGMENTATIONS = ("flip", "rot90", "dihedral", "translate")
#: The device names sidda accepts (``train.device``, ``--device``).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]{1,4})?")


#: What ``train.log`` may list (:mod:`sidda.train.loggers`): ``csv`` is ``history.csv``,
#: rewritten at the end of every epoch; ``tensorboard`` writes event files to RUN/tensorboard/.
LOGGERS = ("csv", "tensorboard")

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
        keep_epoch_checkpoints: Also keep the model of every epoch, as
            ``checkpoints/epoch_0007.pt`` (1-based, with that epoch's validation record), so
            that a label-free rule can later choose among all the epochs, not only among
            ``final`` and the ``best_*`` checkpoints. Costs one model file per epoch.
        augment: Random transforms of every source training batch, applied in this order:
            ``flip`` (horizontal and vertical, each with probability 1/2), ``rot90`` (a
            multiple of 90 degrees), ``dihedral`` (one of the 8 symmetries of the square),
            ``translate`` (circular shifts of up to a tenth of the side); [] for none. Each
            image draws its own; the draws depend only on the seed, the epoch and the step
            (:mod:`sidda.train.augment`). Target batches are never augmented.
        log: Where the epoch metrics go, any of :data:`LOGGERS`: ``csv`` (``history.csv`` and
            ``history_steps.csv``, rewritten at the end of every epoch; the run always has
            them, evaluation and reports read them) and ``tensorboard`` (event files in
            ``RUN/tensorboard/``; needs ``pip install 'sidda[tensorboard]'``).
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
    keep_epoch_checkpoints: bool = False
    augment: tuple[str, ...] = ()
    log: tuple[str, ...] = ("csv",)

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ValueError(f"train.epochs must lie in 1..{MAX_EPOCHS}, got {self.epochs}")
        if not DEVICE_PATTERN.fullmatch(str(self.device)):
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
        if isinstance(self.augment, str):
            raise ValueError(f"train.augment must be a list, e.g. [{self.augment}]")
        object.__setattr__(self, "augment", tuple(self.augment))
        for name in self.augment:
            if name not in AUGMENTATIONS:
                raise ValueError(
                    f"train.augment: unknown augmentation {short_repr(name)}; choose from "
                    f"{', '.join(AUGMENTATIONS)} (a list, e.g. [flip, translate]; [] for none)"
                )
        if len(set(self.augment)) < len(self.augment):
            raise ValueError(f"train.augment lists an augmentation twice: "
                             f"{short_repr(list(self.augment))}")
        if isinstance(self.log, str):
            raise ValueError(f"train.log must be a list, e.g. [{self.log}]")
        object.__setattr__(self, "log", tuple(self.log))
        if any(k not in LOGGERS for k in self.log) or len(set(self.log)) != len(self.log):
            raise ValueError(f"train.log lists each of {', '.join(LOGGERS)} at most once, got "
                             f"{short_repr(list(self.log))}; e.g. [csv, tensorboard]")

    def resolved_milestones(self) -> list[int]:
        """The learning-rate milestones actually used."""
        if self.milestones is not None:
            return list(self.milestones)
        return [max(1, self.epochs // 2), max(2, 4 * self.epochs // 5)]



@dataclass(frozen=True)
class DistConfig:
    """How a run uses its processes and its GPU.

    Attributes:
        da_scope: ``"global"``, the only value: every rank evaluates the method on the
            latents of all ranks, the single-process objective (:mod:`sidda.train.distributed`).
            Kept so that the configs of earlier runs load; ``"local"`` was removed.
        sync_batchnorm: On CUDA with several ranks, turn BatchNorm into SyncBatchNorm, so that
            its statistics cover the whole global batch as in one process. Ignored on the CPU,
            where torch has no SyncBatchNorm: there each rank normalises with its own shard.
        bf16: bf16 autocast for the model on CUDA (the loss always runs in float32).
        channels_last: NHWC memory format for the model and the images; None picks it on CUDA
            with bf16, where tensor-core convolutions prefer it.
        timeout_s: Seconds a collective may wait for the other ranks before failing.
    """

    da_scope: str = "global"
    sync_batchnorm: bool = True
    bf16: bool = True
    channels_last: bool | None = None
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.da_scope not in DA_SCOPES:
            raise ValueError(
                f"dist.da_scope must be 'global' (every rank evaluates the method on the whole "
                f"global batch, as one process does), got {short_repr(self.da_scope)}; remove "
                "the key"
            )
        if not self.timeout_s > 0:
            raise ValueError(f"dist.timeout_s must be > 0, got {self.timeout_s}")


