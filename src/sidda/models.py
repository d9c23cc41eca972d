"""The paper's classifiers: a plain CNN and C_N / D_N-equivariant CNNs (escnn).

Every model maps images (B, C, H, W) to ``(latent, logits)``: ``latent`` (B, 256) is the
LayerNorm output of the first fully connected layer, the space in which SIDDA aligns the
domains, and ``logits`` (B, K) the classifier output. Architecture (spec section 2)::

    conv k5 p2 -> BN -> ReLU -> maxpool 2 -> dropout 0.2        8 fields
    conv k3 p1 -> BN -> ReLU -> maxpool 2 -> dropout 0.2       16 fields
    conv k3 p1 -> BN -> ReLU -> maxpool 2 -> dropout 0.2       32 fields
    [equivariant models: max over each regular field (group pooling) -> 32 channels]
    flatten -> fc1 (-> 256, N(0, 0.005)) -> LayerNorm = latent -> fc2 (-> K, N(0, 0.01))

For ``d<N>`` and ``c<N>`` each of the 8/16/32 fields is a regular representation of the group
(2N resp. N channels), so a D4 model has 64, 128 and 256 channels.

Where equivariance holds, and where it does not:

* Only the feature maps up to the group pooling are equivariant (:meth:`features`); the
  flatten + fc1 head sees a spatial map, so the logits are **not** rotation invariant.
* On a pixel grid only rotations by multiples of 90 degrees (and flips) are exact.
* Max-pooling with stride 2 commutes with a 90-degree rotation only if every pooled map has an
  even size. 32 -> 16 -> 8 -> 4 is exact; the paper's 100 -> 50 -> 25 -> 12 is not: the odd
  25-pixel map loses its last row and column, which a rotation moves to the other side.
  :func:`is_exactly_equivariant_size` says which input sizes are exact.

Names: ``cnn``; ``c<N>`` (rotations by 2 pi/N, ``c1`` the trivial group); ``d<N>`` (rotations
and a reflection, order 2N; ``d1`` is the reflection group of order 2, not the trivial group
that the authors' code builds for N = 1).
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "CNN",
    "EquivariantCNN",
    "ModelConfig",
    "build_model",
    "export_model",
    "is_exactly_equivariant_size",
    "model_state",
    "parse_model_name",
]

logger = logging.getLogger(__name__)

WIDTHS = (8, 16, 32)
KERNELS = (5, 3, 3)
N_POOLS = len(WIDTHS)
_NAME = re.compile(r"^(cnn|[cd](\d+))$")


@dataclass(frozen=True)
class ModelConfig:
    """Model options; channels, classes and image size come from the data.

    Attributes:
        name: ``cnn``, ``c<N>`` or ``d<N>``.
        dropout: Dropout probability after each block.
        latent_dim: Width of the latent (LayerNorm) layer.
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
    """Split a model name into its kind (``cnn``, ``c``, ``d``) and group order parameter N.

    >>> parse_model_name("d4")
    ('d', 4)
    >>> parse_model_name("cnn")
    ('cnn', 0)
    """
    m = _NAME.match(str(name).strip().lower())
    if m is None or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(
            f"unknown model {name!r}; use 'cnn', 'c<N>' (rotations, e.g. c4) or 'd<N>' "
            "(rotations and flips, e.g. d4) with N >= 1"
        )
    if m.group(1) == "cnn":
        return "cnn", 0
    return m.group(1)[0], int(m.group(2))


def is_exactly_equivariant_size(image_size: int) -> bool:
    """Whether every max-pooled map is of even size, so that 90-degree rotations are exact.

    >>> is_exactly_equivariant_size(32), is_exactly_equivariant_size(100)
    (True, False)
    """
    size = int(image_size)
    for _ in range(N_POOLS):
        if size % 2:
            return False
        size //= 2
    return True


def _check_image_size(image_size: int) -> None:
    if int(image_size) < 2**N_POOLS:
        raise ValueError(
            f"image size {image_size} is too small for the model: it pools by 2 three times, so "
            f"images must be at least {2**N_POOLS}x{2**N_POOLS}; resize them (data.image_size)"
        )


class _Head(nn.Module):
    """flatten -> fc1 -> LayerNorm (latent) -> fc2 (logits), with the paper's init."""

    def __init__(self, in_features: int, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, latent_dim)
        self.norm = nn.LayerNorm(latent_dim)
        self.fc2 = nn.Linear(latent_dim, num_classes)
        nn.init.normal_(self.fc1.weight, 0.0, 0.005)
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor]:
        z = self.norm(self.fc1(f.flatten(1)))  # (B, C*h*w) -> (B, D)
        return z, self.fc2(z)  # (B, D), (B, K)


class _Classifier(nn.Module):
    """Shared forward: ``features`` (B, 32, h, w) then the head."""

    head: _Head

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) -> latent (B, D), logits (B, K)."""
        return self.head(self.features(x))

    def _flat_size(self, in_channels: int, image_size: int) -> int:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            f = self.features(torch.zeros(1, in_channels, image_size, image_size))
        self.train(was_training)
        return f[0].numel()


class CNN(_Classifier):
    """The paper's plain CNN baseline (spec 2.1)."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dropout: float = 0.2,
        latent_dim: int = 256,
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        layers: list[nn.Module] = []
        c_in = in_channels
        for width, k in zip(WIDTHS, KERNELS):
            layers += [
                nn.Conv2d(c_in, width, k, padding=k // 2),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, 2),
                nn.Dropout(dropout),
            ]
            c_in = width
        self.blocks = nn.Sequential(*layers)
        self.head = _Head(self._flat_size(in_channels, image_size), latent_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> feature maps (B, 32, H/8, W/8)."""
        return self.blocks(x)


def _escnn():
    """Import escnn with the workaround for escnn issue #112 (cold basis cache)."""
    import escnn.group._numerical as numerical
    from escnn import gspaces
    from escnn import nn as enn

    numerical.randomized_svd = None
    return gspaces, enn


class EquivariantCNN(_Classifier):
    """The paper's escnn classifier for the group C_N (``dihedral=False``) or D_N (spec 2.2).

    Args:
        n: Group order parameter N >= 1.
        dihedral: D_N (rotations and reflections) if True, else C_N.
        in_channels: Image channels.
        num_classes: Number of classes K.
        image_size: Input height = width.
        dropout: Dropout probability.
        latent_dim: Width of the latent layer.
    """

    def __init__(
        self,
        n: int,
        *,
        dihedral: bool,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dropout: float = 0.2,
        latent_dim: int = 256,
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        gspaces, enn = _escnn()
        if dihedral:
            gspace = gspaces.flipRot2dOnR2(N=n)
        elif n == 1:
            gspace = gspaces.trivialOnR2()
        else:
            gspace = gspaces.rot2dOnR2(N=n)
        self.gspace = gspace
        self.in_type = enn.FieldType(gspace, in_channels * [gspace.trivial_repr])
        modules = []
        t_in = self.in_type
        for width, k in zip(WIDTHS, KERNELS):
            t_out = enn.FieldType(gspace, width * [gspace.regular_repr])
            modules += [
                enn.R2Conv(t_in, t_out, kernel_size=k, padding=k // 2),
                enn.InnerBatchNorm(t_out),
                enn.ReLU(t_out, inplace=True),
                enn.PointwiseMaxPool2D(t_out, kernel_size=2, stride=2),
                enn.PointwiseDropout(t_out, p=dropout),
            ]
            t_in = t_out
        self.blocks = enn.SequentialModule(*modules)
        self.pool = enn.GroupPooling(t_in)
        self.head = _Head(self._flat_size(in_channels, image_size), latent_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> group-pooled feature maps (B, 32, H/8, W/8), equivariant."""
        from escnn.nn import GeometricTensor

        return self.pool(self.blocks(GeometricTensor(x, self.in_type))).tensor


class _Exported(_Classifier):
    """A plain-PyTorch copy of an equivariant model (escnn ``export()``), for fast evaluation."""

    def __init__(self, model: EquivariantCNN) -> None:
        super().__init__()
        self.blocks = model.blocks.export()
        self.pool = model.pool.export()
        self.head = copy.deepcopy(model.head)

    def features(self, x: Tensor) -> Tensor:
        return self.pool(self.blocks(x))


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's learnable state on the CPU, without escnn's eval-mode filter caches.

    escnn's ``R2Conv`` adds ``filter`` and ``expanded_bias`` buffers in ``eval()`` mode; the
    state is taken in training mode so that it loads into a freshly built model.
    """
    base = model.module if hasattr(model, "module") else model
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
    base = model.module if hasattr(model, "module") else model
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
    """Build a classifier by name: ``cnn``, ``c<N>`` or ``d<N>``.

    >>> m = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    >>> [t.shape for t in m(torch.zeros(2, 1, 32, 32))]
    [torch.Size([2, 256]), torch.Size([2, 3])]
    """
    kind, n = parse_model_name(name)
    if in_channels < 1 or num_classes < 2:
        raise ValueError(
            f"need in_channels >= 1 and num_classes >= 2, got {in_channels} and {num_classes}"
        )
    kw = dict(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size,
        dropout=dropout, latent_dim=latent_dim,
    )
    if kind == "cnn":
        return CNN(**kw)
    return EquivariantCNN(n, dihedral=kind == "d", **kw)
