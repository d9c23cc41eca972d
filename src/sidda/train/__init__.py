"""Training: one loop for the source-only baseline, SIDDA and the other methods.

* :mod:`sidda.train.config` - ``TrainConfig`` and ``DistConfig``, the options;
* :mod:`sidda.train.device` - device names, batches to the device, bf16 autocast, NHWC;
* :mod:`sidda.train.collectives` - ``DistContext`` and the collectives between the ranks;
* :mod:`sidda.train.distributed` - several processes: ``init_distributed``, the cross-entropy
  of a batch split over the ranks, DDP wrapping (``docs/distributed.md``);
* :mod:`sidda.train.recovery` - checkpoints, resuming, signals, non-finite steps
  (``docs/recovery.md``);
* :mod:`sidda.train.augment` - ``train.augment``, the source batches' random transforms;
* :mod:`sidda.train.step` - ``train_step``, one optimisation step of any method, and
  ``method_loss``, a method's objective on the batch gathered over the ranks;
* :mod:`sidda.train.validate` - the validation pass of every epoch;
* :mod:`sidda.train.finish` - after the last epoch, the saved checkpoints get the method's
  final state (AdaBN's target statistics);
* :mod:`sidda.train.loop` - ``fit``, the epochs.

The trainer knows no method by name: every method goes through
:class:`~sidda.methods.base.DAMethod`'s interface.
"""

from sidda.runs import History
from sidda.train.collectives import DistContext
from sidda.train.config import MAX_EPOCHS, DistConfig, TrainConfig
from sidda.train.device import resolve_device
from sidda.train.distributed import init_distributed
from sidda.train.loop import Callback, fit
from sidda.train.recovery import NonFiniteError, TrainingInterrupted
from sidda.train.step import train_step

__all__ = [
    "MAX_EPOCHS",
    "Callback",
    "DistConfig",
    "DistContext",
    "History",
    "NonFiniteError",
    "TrainConfig",
    "TrainingInterrupted",
    "fit",
    "init_distributed",
    "resolve_device",
    "train_step",
]
