"""sidda: SInkhorn Dynamic Domain Adaptation (SIDDA) for image classifiers.

The pieces, each usable on its own:

* :mod:`sidda.losses` - ``sinkhorn_divergence``, ``dynamic_blur``, ``SIDDALoss``: the loss, to
  drop into any training loop;
* :mod:`sidda.methods` - ``LossConfig``, ``build_method``: SIDDA and the methods it is compared
  with (DAN, Deep CORAL, DANN, CDAN, DeepJDOT, MCC), one objective interface;
* :mod:`sidda.models` - ``build_model("cnn" | "c<N>" | "d<N>", ...)``: the paper's networks;
* :mod:`sidda.train` - ``fit``: one loop for SIDDA and the source-only baseline;
* :mod:`sidda.distributed` - ``DistConfig``, ``init_distributed``: bf16 on the GPU, and
  several processes (``torchrun --nproc_per_node=N -m sidda train ...``);
* :mod:`sidda.recovery` - resuming, signals, non-finite steps (``NonFiniteError``,
  ``TrainingInterrupted``);
* :mod:`sidda.datasets`, :mod:`sidda.generators` - data on disk and synthetic data;
* :mod:`sidda.metrics`, :mod:`sidda.evaluate` - accuracy and calibration;
* :mod:`sidda.config`, :mod:`sidda.experiments` - whole runs, as the ``sidda`` command runs them;
* :mod:`sidda.errors` - ``InputError``: input the user can fix (config and data errors are
  ones), as opposed to a bug.
"""

__version__ = "0.1.0"

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataConfig, DataError, ImageSet, load_domains
from sidda.distributed import DistConfig, DistContext, init_distributed
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
from sidda.recovery import NonFiniteError, TrainingInterrupted
from sidda.train import History, TrainConfig, fit

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
