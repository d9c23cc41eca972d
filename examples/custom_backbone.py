"""A custom backbone for sidda: a small residual CNN with global average pooling.

Use it with any of (from the repository root, so that ``examples`` can be imported; from
elsewhere put this folder on PYTHONPATH and write ``custom_backbone:make_net``)::

    python -m sidda train --config configs/astro_cnn_sidda.yaml \
        --set model.name=examples.custom_backbone:make_net

    # in a YAML config
    model: {name: "examples.custom_backbone:make_net", latent_dim: 128}

    # in Python
    build_model("examples.custom_backbone:make_net", in_channels=5, num_classes=3, image_size=64)

The contract (docs/models.md): sidda calls ``make_net(in_channels=C, num_classes=K,
image_size=S, dropout=p, latent_dim=D)`` and the module it returns maps images (B, C, S, S) to
``(latent, logits)`` of shapes (B, D) and (B, K). Run this file to build one and print the shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _Residual(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, plus the input, then ReLU: (B, width, H, W) -> same."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.body(x))


class SmallResNet(nn.Module):
    """Stem, two residual stages, global average pooling, latent (LayerNorm), logits.

    Global average pooling makes it work for any image size and any number of bands.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32,
                 latent_dim: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            _Residual(width), nn.MaxPool2d(2, ceil_mode=True),
            _Residual(width), nn.MaxPool2d(2, ceil_mode=True),
        )
        self.to_latent = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, latent_dim),
                                       nn.LayerNorm(latent_dim))
        self.classify = nn.Linear(latent_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.stages(self.stem(x)).mean((2, 3))  # (B, C, H, W) -> (B, width)
        z = self.to_latent(f)  # (B, D): the space SIDDA aligns
        return z, self.classify(z)  # (B, D), (B, K)


def make_net(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.2,
             latent_dim: int = 256, **kwargs) -> nn.Module:
    """The factory sidda calls: ``model.name: "examples.custom_backbone:make_net"``.

    ``image_size`` is not needed here (global pooling); a network with a flatten layer would use
    it to size that layer. ``**kwargs`` takes whatever later versions of sidda may add.
    """
    return SmallResNet(in_channels, num_classes, latent_dim=latent_dim, dropout=dropout)


if __name__ == "__main__":
    from sidda import build_model

    # `python examples/custom_backbone.py` puts this folder on sys.path: the module imports as
    # `custom_backbone`
    model = build_model("custom_backbone:make_net", in_channels=5, num_classes=3, image_size=64)
    z, logits = model(torch.randn(4, 5, 64, 64))  # four 5-band 64x64 cutouts
    print(f"latent {tuple(z.shape)}, logits {tuple(logits.shape)}")
