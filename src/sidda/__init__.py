"""sidda: SInkhorn Dynamic Domain Adaptation (SIDDA) for image classifiers.

The pieces, each usable on its own:

* :mod:`sidda.losses` - ``sinkhorn_divergence``, ``dynamic_blur``, ``SIDDALoss``: the loss, to
  drop into any training loop;
* :mod:`sidda.methods` - ``LossConfig``, ``build_method``: SIDDA and the methods it is compared
  with (DAN, Deep CORAL, DANN, CDAN, DeepJDOT, MCC), one objective interface;
* :mod:`sidda.models` - ``build_model("cnn" | "c<N>" | "d<N>" | "pkg.module:callable", ...)``:
  the paper's networks, or your own (docs/models.md);
* :mod:`sidda.train` - ``fit``: one loop for SIDDA, the source-only baseline and the other
  methods; :mod:`sidda.train.distributed` (``DistConfig``, ``init_distributed``: bf16 on the GPU,
  and several processes, ``torchrun --nproc_per_node=N -m sidda train ...``) and
  :mod:`sidda.train.recovery` (resuming, signals, non-finite steps: ``NonFiniteError``,
  ``TrainingInterrupted``) are in it;
* :mod:`sidda.datasets`, :mod:`sidda.generators` - data on disk and synthetic data;
* :mod:`sidda.metrics`, :mod:`sidda.evaluate` - accuracy and calibration;
* :mod:`sidda.config`, :mod:`sidda.experiments` - whole runs, as the ``sidda`` command runs them;
* :mod:`sidda.errors` - ``InputError``: input the user can fix (config and data errors are
  ones), as opposed to a bug.
"""

from sidda._version import __version__
from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataConfig, DataError, ImageSet, load_domains
from sidda.errors import InputError
from sidda.losses import (
    SIDDALoss,
    SIDDAOutput,
    SinkhornLoss,
    dynamic_blur,
    max_cross_distance,
    sinkhorn_divergence,
)
from sidda.methods import DAMethod, LossConfig, build_method
from sidda.models import ModelConfig, build_model, export_model
from sidda.train import (
    DistConfig,
    DistContext,
    History,
    NonFiniteError,
    TrainConfig,
    TrainingInterrupted,
    fit,
    init_distributed,
)

__all__ = [
    "ConfigError",
    "DAMethod",
    "DataConfig",
    "DataError",
    "DistConfig",
    "DistContext",
    "History",
    "ImageSet",
    "InputError",
    "LossConfig",
    "ModelConfig",
    "NonFiniteError",
    "RunConfig",
    "SIDDALoss",
    "SIDDAOutput",
    "SinkhornLoss",
    "TrainConfig",
    "TrainingInterrupted",
    "__version__",
    "build_method",
    "build_model",
    "dynamic_blur",
    "export_model",
    "fit",
    "init_distributed",
    "load_domains",
    "max_cross_distance",
    "sinkhorn_divergence",
]
