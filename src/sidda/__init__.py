"""sidda: SInkhorn Dynamic Domain Adaptation (SIDDA) for image classifiers.

The pieces, each usable on its own:

* :mod:`sidda.losses` - ``sinkhorn_divergence``, ``dynamic_blur``, ``SIDDALoss``: the loss, to
  drop into any training loop;
* :mod:`sidda.models` - ``build_model("cnn" | "c<N>" | "d<N>", ...)``: the paper's networks;
* :mod:`sidda.train` - ``fit``: one loop for SIDDA and the source-only baseline;
* :mod:`sidda.datasets`, :mod:`sidda.generators` - data on disk and synthetic data;
* :mod:`sidda.metrics`, :mod:`sidda.evaluate` - accuracy and calibration;
* :mod:`sidda.config`, :mod:`sidda.experiments` - whole runs, as the ``sidda`` command runs them.
"""

__version__ = "0.1.0"

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataConfig, DataError, ImageSet, load_domains
from sidda.losses import (
    LossConfig,
    SIDDALoss,
    SIDDAOutput,
    SinkhornLoss,
    dynamic_blur,
    max_cross_distance,
    sinkhorn_divergence,
)
from sidda.models import ModelConfig, build_model, export_model
from sidda.train import History, TrainConfig, fit

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "History",
    "ImageSet",
    "LossConfig",
    "ModelConfig",
    "RunConfig",
    "SIDDALoss",
    "SIDDAOutput",
    "SinkhornLoss",
    "TrainConfig",
    "__version__",
    "build_model",
    "dynamic_blur",
    "export_model",
    "fit",
    "load_domains",
    "max_cross_distance",
    "sinkhorn_divergence",
]
