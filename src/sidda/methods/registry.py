"""Method names -> classes, and :func:`build_method`.

Each method lives in its own module of :mod:`sidda.methods`; a module is imported the first
time its method is built, so a run pays only for the method it trains.
"""

from __future__ import annotations

import importlib

from sidda.methods.base import DAMethod
from sidda.methods.config import METHOD_NAMES, LossConfig

__all__ = ["build_method", "method_class"]

#: ``loss.method`` -> "module:class" (``source_only`` has no module: the loop runs plain CE).
_CLASSES = {
    "sidda": "sidda.methods.sidda:SIDDAMethod",
    "dan": "sidda.methods.dan:DAN",
    "coral": "sidda.methods.coral:DeepCORAL",
    "dann": "sidda.methods.dann:DANN",
    "cdan": "sidda.methods.cdan:CDAN",
    "deepjdot": "sidda.methods.deepjdot:DeepJDOT",
    "mcc": "sidda.methods.mcc:MCC",
    "adabn": "sidda.methods.adabn:AdaBN",
}
assert set(_CLASSES) | {"source_only"} == set(METHOD_NAMES)


def method_class(name: str) -> type[DAMethod]:
    """The class of method ``name`` (any of ``LossConfig``'s methods but ``source_only``)."""
    if name not in _CLASSES:
        raise ValueError(f"no method module for {name!r}; choose from {', '.join(_CLASSES)}")
    module, cls = _CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(
    cfg: LossConfig, *, latent_dim: int = 256, num_classes: int = 3
) -> DAMethod | None:
    """The method module of ``cfg`` (None for ``source_only``).

    Args:
        cfg: The loss config; its options are passed as keyword arguments.
        latent_dim: Width D of the model's latent (domain heads are built on it).
        num_classes: Number of classes K.
    """
    if cfg.method == "source_only":
        return None
    return method_class(cfg.method)(latent_dim=latent_dim, num_classes=num_classes,
                                    **cfg.options)
