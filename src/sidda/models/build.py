"""Building models by name, and what every model goes through: export, state, training setup.

Names: ``cnn`` (:class:`~sidda.models.cnn.CNN`); ``c<N>`` and ``d<N>``
(:class:`~sidda.models.equivariant.EquivariantCNN`, 1 <= N <= 16); ``package.module:callable``,
a custom backbone (:mod:`sidda.models.custom`). A run stores the name, and evaluating,
resuming or exporting it rebuilds the model from the name. :func:`unwrap` is the one place
that takes a model out of its DataParallel, DistributedDataParallel and ``torch.compile``
wrappers.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sidda.errors import InputError, short_repr
from sidda.models._cpu import tune_cpu_allocator
from sidda.models.cnn import CNN
from sidda.models.custom import build_custom, is_custom_name
from sidda.models.equivariant import MAX_GROUP_ORDER, EquivariantCNN, _Exported

__all__ = [
    "ModelConfig",
    "build_model",
    "export_model",
    "model_state",
    "parse_model_name",
    "prepare_for_training",
    "unwrap",
]

_NAME = re.compile(r"^(cnn|[cd](\d{1,6}))$")


@dataclass(frozen=True)
class ModelConfig:
    """Model options; channels, classes and image size come from the data.

    Attributes:
        name: ``cnn``, ``c<N>`` or ``d<N>`` with 1 <= N <= 16, or ``package.module:callable``
            for a custom backbone (only the form is checked here; the module is imported when
            the model is built).
        dropout: Dropout probability after each block (passed on to a custom backbone).
        latent_dim: Width of the latent (LayerNorm) layer (passed on to a custom backbone).
    """

    name: str = "cnn"
    dropout: float = 0.2
    latent_dim: int = 256

    def __post_init__(self) -> None:
        parse_model_name(self.name)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout}")
        if self.latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {self.latent_dim}")


def parse_model_name(name: str) -> tuple[str, int]:
    """Split a model name into its kind and group order parameter N.

    The kind is ``cnn``, ``c``, ``d`` or ``custom`` (``package.module:callable``, N = 0; the
    module is not imported here).

    >>> parse_model_name("d4")
    ('d', 4)
    >>> parse_model_name("cnn")
    ('cnn', 0)
    >>> parse_model_name("mypkg.nets:make_net")
    ('custom', 0)
    """
    if is_custom_name(name):
        return "custom", 0
    m = _NAME.match(str(name).strip().lower())
    if m is None or (m.group(2) is not None and not 1 <= int(m.group(2)) <= MAX_GROUP_ORDER):
        raise InputError(
            f"unknown model {short_repr(name)}; use 'cnn', 'c<N>' (rotations, e.g. c4) or "
            f"'d<N>' (rotations and flips, e.g. d4) with 1 <= N <= {MAX_GROUP_ORDER}, or "
            "'package.module:callable' for your own network (docs/models.md)"
        )
    if m.group(1) == "cnn":
        return "cnn", 0
    return m.group(1)[0], int(m.group(2))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel, DistributedDataParallel and ``torch.compile`` wrappers, in
    any nesting (or the model itself).

    Validate, export and save through this: the wrappers' ``state_dict`` keys carry a
    ``module.`` or ``_orig_mod.`` prefix, and a forward pass of a DDP wrapper may start
    collectives that the other ranks never join.

    >>> m = nn.Linear(2, 2)
    >>> unwrap(nn.DataParallel(m)) is m
    True
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def prepare_for_training(
    model: nn.Module,
    *,
    device: str | torch.device = "cpu",
    fused: bool | None = None,
    compile: bool = False,
    tune_allocator: bool = True,
) -> nn.Module:
    """Move ``model`` to ``device`` and switch on the fast CPU settings; returns the model to train.

    Args:
        model: A model of :func:`build_model` (or any module; the options then do what applies).
        device: Training device.
        fused: Use the fused channels-last blocks on the CPU (same function, fewer passes over
            the activation maps; see the comment above ``_BlockTail`` in ``sidda/models/_cpu.py``);
            None keeps the model's ``fused`` attribute (True when built).
        compile: Wrap the model in ``torch.compile`` (measured slower on the CPU, plus 30-100 s
            of compilation; off by default). The returned module then differs from ``model``,
            which keeps the weights.
        tune_allocator: On the CPU, call :func:`tune_cpu_allocator`.

    >>> m = prepare_for_training(build_model("cnn", in_channels=1, num_classes=3, image_size=32))
    >>> m.fused
    True
    """
    device = torch.device(device)
    model.to(device)
    base = unwrap(model)
    if fused is not None:
        base.fused = bool(fused)
    if device.type == "cpu" and tune_allocator:
        tune_cpu_allocator()
    if compile:
        return torch.compile(model)
    return model


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's learnable state on the CPU, without escnn's eval-mode filter caches.

    escnn's ``R2Conv`` adds ``filter`` and ``expanded_bias`` buffers in ``eval()`` mode; the
    state is taken in training mode so that it loads into a freshly built model.
    """
    base = unwrap(model)
    was_training = base.training
    base.train()
    state = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
    base.train(was_training)
    return state


def export_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference; escnn models become plain PyTorch modules.

    The exported network computes the same function (up to float rounding) without rebuilding
    filters from the equivariant basis at every call. The copy is in ``eval()`` mode.
    """
    base = unwrap(model)
    was_training = base.training
    base.eval()
    out = _Exported(base) if isinstance(base, EquivariantCNN) else copy.deepcopy(base)
    base.train(was_training)
    return out.eval()


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float = 0.2,
    latent_dim: int = 256,
) -> nn.Module:
    """Build a classifier by name: ``cnn``, ``c<N>``, ``d<N>`` or ``package.module:callable``.

    Args:
        name: The model (:class:`ModelConfig`).
        in_channels: Image bands C >= 1.
        num_classes: Number of classes K >= 2.
        image_size: Input height = width.
        dropout: Dropout probability.
        latent_dim: Width of the latent layer.

    Returns:
        A module mapping images (B, C, H, W) to ``(latent, logits)``, (B, D) and (B, K), in
        training mode. A custom backbone is called with these keyword arguments and checked
        (:func:`~sidda.models.custom.build_custom`).

    >>> m = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    >>> [t.shape for t in m(torch.zeros(2, 1, 32, 32))]
    [torch.Size([2, 256]), torch.Size([2, 3])]
    """
    kind, n = parse_model_name(name)
    if in_channels < 1 or num_classes < 2 or image_size < 1:
        raise InputError(
            f"need in_channels >= 1, num_classes >= 2 and image_size >= 1, got {in_channels}, "
            f"{num_classes} and {image_size}"
        )
    kw = dict(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size,
        dropout=dropout, latent_dim=latent_dim,
    )
    if kind == "custom":
        return build_custom(name, **kw)
    if kind == "cnn":
        return CNN(**kw)
    return EquivariantCNN(n, dihedral=kind == "d", **kw)
