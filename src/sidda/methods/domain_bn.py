"""Domain-specific BatchNorm statistics: one set of running statistics per domain.

With one forward pass on ``cat([x_s, x_t])`` (the paper's SIDDA), every BatchNorm layer
normalises both domains with their pooled batch statistics, and evaluation uses running
statistics of the 50/50 mixture, which match neither domain. When the two domains' pixel
statistics differ a lot (the shapes' added Poisson noise puts target pixels at up to 13 where
source pixels are +-1) the pooled statistics change the source features the classifier was
trained on, at the very step the alignment starts (docs/method.md, "Robust SIDDA").

:class:`DomainStats` keeps a second copy of every BatchNorm layer's running statistics for the
target domain (Chang et al. 2019, "Domain-Specific Batch Normalization for Unsupervised Domain
Adaptation", CVPR; at test time the same idea as AdaBN, Li et al. 2018). The source and target
batches then go through the network in two passes; inside :meth:`DomainStats.target` the target
copies are swapped into the layers, so the target pass normalises with target batch statistics
and updates the target running statistics, and evaluation of target images uses them. The
affine parameters (gamma, beta) and all weights stay shared.

The swap exchanges which tensors the layers' buffer slots hold (no value is copied), so it works
for every layer that keeps its statistics in a ``torch.nn.modules.batchnorm._BatchNorm``
(``nn.BatchNorm2d``, escnn's ``InnerBatchNorm``, and sidda's fused blocks, which look the
buffers up at every call), and the source pass's autograd graph keeps the tensors it saved: an
in-place copy would change tensors that ``nn.BatchNorm``'s backward still needs ("modified by an
inplace operation").

>>> from sidda.models import build_model
>>> model = build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)
>>> stats = DomainStats()
>>> stats.attach(model)
>>> len(stats.layers)
3
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["DomainStats", "batchnorm_layers"]

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that track running statistics, in module order."""
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None]


class DomainStats(nn.Module):
    """The target domain's BatchNorm running statistics of one model.

    Call :meth:`attach` once with the model (before loading a saved state); the target copies
    are buffers of this module (``t<i>_running_mean`` ...), so they are saved and loaded with
    its ``state_dict``. They start as copies of the model's statistics at :meth:`attach`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers: list[_BatchNorm] = []

    def attach(self, model: nn.Module) -> None:
        """Bind to ``model``'s BatchNorm layers and create the target copies."""
        self.layers = batchnorm_layers(model)
        for i, bn in enumerate(self.layers):
            for name in _BUFFERS:
                key = f"t{i}_{name}"
                if not hasattr(self, key):
                    self.register_buffer(key, getattr(bn, name).detach().clone())

    @property
    def attached(self) -> bool:
        """Whether :meth:`attach` found BatchNorm layers."""
        return bool(self.layers)

    def _swap(self) -> None:
        for i, bn in enumerate(self.layers):
            for name in _BUFFERS:
                key = f"t{i}_{name}"
                self._buffers[key], bn._buffers[name] = bn._buffers[name], self._buffers[key]

    @contextmanager
    def target(self) -> Iterator[None]:
        """Inside the block the model's BatchNorm layers hold the target statistics."""
        if not self.layers:
            yield
            return
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def target_state(self) -> dict[str, torch.Tensor]:
        """The target statistics as a plain dict (what evaluation loads)."""
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}


def load_target_stats(model: nn.Module, state: dict) -> DomainStats | None:
    """A :class:`DomainStats` bound to ``model`` holding the target statistics in ``state``
    (a method's ``state_dict`` with keys ``domain_stats.t<i>_...``), or None if it has none."""
    prefix = "domain_stats."
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        return None
    stats = DomainStats()
    stats.attach(model)
    stats.load_state_dict(own)
    return stats
