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

Names are imported on first use (PEP 562), so ``import sidda`` and the ``sidda`` command's
``--help`` load neither torch nor escnn; ``from sidda import fit`` loads what ``fit`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sidda._version import __version__

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and readers
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

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "ConfigError": "sidda.config", "RunConfig": "sidda.config",
    "DataConfig": "sidda.datasets", "DataError": "sidda.datasets",
    "ImageSet": "sidda.datasets", "load_domains": "sidda.datasets",
    "InputError": "sidda.errors",
    **dict.fromkeys(("SIDDALoss", "SIDDAOutput", "SinkhornLoss", "dynamic_blur",
                     "max_cross_distance", "sinkhorn_divergence"), "sidda.losses"),
    **dict.fromkeys(("DAMethod", "LossConfig", "build_method"), "sidda.methods"),
    **dict.fromkeys(("ModelConfig", "build_model", "export_model"), "sidda.models"),
    **dict.fromkeys(("DistConfig", "DistContext", "History", "NonFiniteError", "TrainConfig",
                     "TrainingInterrupted", "fit", "init_distributed"), "sidda.train"),
}


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (``sidda.fit``, ``from sidda import fit``)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sidda' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
