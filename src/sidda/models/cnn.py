"""The paper's plain CNN baseline and the head every built-in model shares.

Every built-in model maps images (B, C, H, W) to ``(latent, logits)``: ``latent`` (B, 256) is
the LayerNorm output of the first fully connected layer, the space in which SIDDA aligns the
domains, and ``logits`` (B, K) the classifier output. C, the number of input bands, is any
C >= 1: only the first convolution sees it. Architecture (the authors' ``models.py``)::

    conv k5 p2 -> BN -> ReLU -> maxpool 2 -> dropout 0.2        8 fields
    conv k3 p1 -> BN -> ReLU -> maxpool 2 -> dropout 0.2       16 fields
    conv k3 p1 -> BN -> ReLU -> maxpool 2 -> dropout 0.2       32 fields
    [equivariant models: max over each regular field (group pooling) -> 32 channels]
    flatten -> fc1 (-> 256, N(0, 0.005)) -> LayerNorm = latent -> fc2 (-> K, N(0, 0.01))

For the CNN a field is one channel. On the CPU the blocks run on the fused channels-last fast
path of :mod:`sidda.models._cpu` (``model.fused = False`` runs the modules one by one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sidda.datasets import MAX_IMAGE_SIZE
from sidda.errors import InputError
from sidda.models._cpu import _plain_blocks_fused, _use_fast_path

__all__ = ["CNN"]

WIDTHS = (8, 16, 32)
KERNELS = (5, 3, 3)
N_POOLS = len(WIDTHS)


def _check_image_size(image_size: int) -> None:
    if int(image_size) > MAX_IMAGE_SIZE:
        raise InputError(
            f"image size {image_size} is larger than the models take (at most "
            f"{MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}); resize the images (data.image_size)"
        )
    if int(image_size) < 2**N_POOLS:
        raise InputError(
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
    """The paper's plain CNN baseline."""

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
        for width, k in zip(WIDTHS, KERNELS, strict=True):
            layers += [
                nn.Conv2d(c_in, width, k, padding=k // 2),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, 2),
                nn.Dropout(dropout),
            ]
            c_in = width
        self.blocks = nn.Sequential(*layers)
        self.fused = True  # the CPU fast path (see _BlockTail); False runs the modules as listed
        self.head = _Head(self._flat_size(in_channels, image_size), latent_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> feature maps (B, 32, H/8, W/8)."""
        if not _use_fast_path(self, x):
            return self.blocks(x)
        return _plain_blocks_fused(self.blocks, x)  # (B, 32, H/8, W/8), channels-last

