"""The paper's C_N- and D_N-equivariant classifiers (escnn), and their plain-PyTorch export.

The layout is the CNN's (:mod:`sidda.models.cnn`) with each of the 8/16/32 fields a regular
representation of the group (2N channels for D_N, N for C_N), so a D4 model has 64, 128 and
256 channels, followed by group pooling (the max over each field) -> 32 channels and the same
head. The C input bands are C copies of the trivial representation: any C >= 1.

Where equivariance holds, and where it does not:

* Only the feature maps up to the group pooling are equivariant (:meth:`features`); the
  flatten + fc1 head sees a spatial map, so the logits are **not** rotation invariant in
  general. (For a 90-degree rotation at an exact size whose last map is 1x1, such as 8x8
  inputs, the flatten sees one pixel and the logits are invariant too.)
* On a pixel grid only rotations by multiples of 90 degrees (and flips) are exact.
* Max-pooling with stride 2 commutes with a 90-degree rotation only if every pooled map has an
  even size. 32 -> 16 -> 8 -> 4 is exact; the paper's 100 -> 50 -> 25 -> 12 is not: the odd
  25-pixel map loses its last row and column, which a rotation moves to the other side.
  :func:`is_exactly_equivariant_size` says which input sizes are exact.

Groups: ``c<N>`` are the rotations by 2 pi/N (``c1`` the trivial group); ``d<N>`` the rotations
and a reflection, order 2N (``d1`` is the reflection group of order 2, not the trivial group
that the authors' code builds for N = 1), with 1 <= N <= :data:`MAX_GROUP_ORDER`.

escnn is imported here only, when a model is built (:func:`_escnn`).
"""

from __future__ import annotations

import copy

from torch import Tensor

from sidda.models._cpu import (
    _channels_last,
    _field_max,
    _fused_block,
    _plain_blocks_fused,
    _use_fast_path,
)
from sidda.models.cnn import KERNELS, N_POOLS, WIDTHS, _check_image_size, _Classifier, _Head

__all__ = ["MAX_GROUP_ORDER", "EquivariantCNN", "is_exactly_equivariant_size"]

#: Largest group order N of ``c<N>`` and ``d<N>``: escnn's cost grows with N (d1000 takes many
#: minutes only to build) and the paper goes up to d8.
MAX_GROUP_ORDER = 16


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


def _escnn():
    """Import escnn with the workaround for escnn issue #112 (cold basis cache)."""
    import escnn.group._numerical as numerical
    from escnn import gspaces
    from escnn import nn as enn

    numerical.randomized_svd = None
    return gspaces, enn


class EquivariantCNN(_Classifier):
    """The paper's escnn classifier for the group C_N (``dihedral=False``) or D_N.

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
        for width, k in zip(WIDTHS, KERNELS, strict=True):
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
        self.field_size = gspace.regular_repr.size  # channels per regular field: 2N, N or 1
        self.fused = True  # the CPU fast path in training mode (see _BlockTail)
        self.head = _Head(self._flat_size(in_channels, image_size), latent_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> group-pooled feature maps (B, 32, H/8, W/8), equivariant."""
        if self.training and _use_fast_path(self, x):
            return self._fused_features(x)
        from escnn.nn import GeometricTensor

        return self.pool(self.blocks(GeometricTensor(x, self.in_type))).tensor

    def _fused_features(self, x: Tensor) -> Tensor:
        """The escnn blocks on the fast path: the filters are expanded from the equivariant basis
        as escnn does in training mode, and InnerBatchNorm shares its statistics per field."""
        g = self.field_size
        x = _channels_last(x)
        for i in range(0, len(self.blocks), 5):
            conv, bn, drop = self.blocks[i], self.blocks[i + 1], self.blocks[i + 4]
            weight, bias = conv.expand_parameters()  # (C_out, C_in, k, k), (C_out,)
            x = _fused_block(x, weight, bias, conv.padding, getattr(bn, f"batch_norm_[{g}]"),
                             drop.p if drop.training else 0.0, group=g)
        return _field_max(x, g)  # group pooling: (B, 32, h, w), channels-last


class _Exported(_Classifier):
    """A plain-PyTorch copy of an equivariant model (escnn ``export()``), for fast evaluation."""

    def __init__(self, model: EquivariantCNN) -> None:
        super().__init__()
        self.blocks = model.blocks.export()  # Conv2d-BatchNorm2d-ReLU-MaxPool2d-Dropout x 3
        self.pool = model.pool.export()
        self.head = copy.deepcopy(model.head)
        self.field_size = model.field_size
        self.fused = getattr(model, "fused", True)

    def features(self, x: Tensor) -> Tensor:
        if not _use_fast_path(self, x):
            return self.pool(self.blocks(x))
        return _field_max(_plain_blocks_fused(self.blocks, x), self.field_size)


