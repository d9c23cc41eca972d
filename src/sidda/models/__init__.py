"""The paper's classifiers: a plain CNN and C_N / D_N-equivariant CNNs (escnn).

Every model maps images (B, C, H, W) to ``(latent, logits)``: ``latent`` (B, D) is the space in
which SIDDA aligns the domains (D = 256, the LayerNorm output of the first fully connected
layer) and ``logits`` (B, K) the classifier output. ``build_model(name, in_channels=...,
num_classes=..., image_size=...)`` builds one by name:

* ``cnn`` - the paper's plain CNN (:mod:`sidda.models.cnn`, which has the architecture);
* ``c<N>``, ``d<N>`` - the escnn models for the rotation group C_N and the dihedral group D_N,
  1 <= N <= 16 (:mod:`sidda.models.equivariant`, which says where equivariance holds);
* ``package.module:callable`` - your own network (:mod:`sidda.models.custom` has the contract).

The built-in models take any number C >= 1 of input bands. docs/models.md is the user's guide.

The modules:

* :mod:`sidda.models.build` - ``ModelConfig``, ``parse_model_name``, ``build_model``,
  ``export_model`` (escnn -> plain PyTorch for evaluation), ``model_state``,
  ``prepare_for_training`` and ``unwrap`` (DDP, DataParallel, ``torch.compile``);
* :mod:`sidda.models.cnn`, :mod:`sidda.models.equivariant` - the networks;
* :mod:`sidda.models.custom` - importing, calling and checking a custom backbone;
* :mod:`sidda.models._cpu` - the fused channels-last CPU blocks that the networks run on the
  CPU (same function, far fewer passes over the activation maps; ``model.fused = False`` runs
  the modules one by one) and ``tune_cpu_allocator`` (glibc malloc). Figures:
  ``docs/benchmarks.md``.
"""

from sidda.models._cpu import (
    _channels_last,  # noqa: F401 - benchmarks import it from here
    tune_cpu_allocator,
)
from sidda.models.build import (
    ModelConfig,
    build_model,
    export_model,
    model_state,
    parse_model_name,
    prepare_for_training,
    unwrap,
)
from sidda.models.cnn import CNN
from sidda.models.equivariant import MAX_GROUP_ORDER, EquivariantCNN, is_exactly_equivariant_size

__all__ = [
    "CNN",
    "EquivariantCNN",
    "MAX_GROUP_ORDER",
    "ModelConfig",
    "build_model",
    "export_model",
    "is_exactly_equivariant_size",
    "model_state",
    "parse_model_name",
    "prepare_for_training",
    "tune_cpu_allocator",
    "unwrap",
]
