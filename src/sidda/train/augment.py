r"""Random transforms of the source training batches (``train.augment``).

Each image of a global source batch draws its own transform, for each name of
``train.augment`` in the order listed (:data:`~sidda.train.config.AUGMENTATIONS`):

``flip``
    :math:`x \mapsto F_h^{a} F_v^{b} x`, with :math:`F_h` the horizontal and :math:`F_v` the
    vertical mirror and :math:`a, b \in \{0, 1\}` independent, each 1 with probability 1/2.
``rot90``
    :math:`x \mapsto R^k x`, :math:`R` the rotation by 90 degrees (``torch.rot90`` over the
    image axes), :math:`k` uniform in :math:`\{0, 1, 2, 3\}`.
``dihedral``
    :math:`x \mapsto R^k F_h^{a} x`, :math:`(k, a)` uniform over the 8 pairs: each of the 8
    symmetries of the square (the group D4) with probability 1/8.
``translate``
    a circular shift by :math:`(d_y, d_x)` pixels, each uniform in :math:`\{-s, \dots, s\}`,
    :math:`s = \max(1, \operatorname{round}(0.1 \cdot \text{side}))`: what leaves one side
    comes back on the other, so no pixel value is invented (an object near the border may
    wrap).

``rot90`` and ``dihedral`` need square images (sidda's are). The equivariant models' feature
maps rotate with the input, but their head flattens a spatial map, so their logits are not
invariant either (docs/method.md, "Equivariance"). Target batches are never augmented: the
alignment terms should compare the target distribution as it is.

**Reproducible and resumable without state.** The draws come from a NumPy generator seeded by
``(train.seed, epoch, step)`` alone, made for each batch, never from torch's global
generator (dropout's stream is untouched, and ``train.augment: []`` draws nothing). A run
resumed mid-epoch draws what an uninterrupted one drew, and N ranks, each taking the draws of
its own rows of the global batch, transform exactly the images that one process transforms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sidda.train.config import AUGMENTATIONS

__all__ = ["augment_batch", "draw", "translate_range"]

_STREAM = 0x61756720  # separates these draws from every other seeded stream of a run


def translate_range(side: int) -> int:
    """The largest shift of ``translate`` for images of this side, in pixels.

    >>> translate_range(100), translate_range(16)
    (10, 2)
    """
    return max(1, round(0.1 * side))


def draw(names: Sequence[str], n: int, *, seed: int, epoch: int, step: int,
         side: int) -> dict[str, Tensor]:
    """The transforms of a global batch of ``n`` images: ``{name: (n, ...) int64}``.

    ``flip``: (n, 2) mirror flags; ``rot90``: (n,) quarter turns; ``dihedral``: (n, 2) quarter
    turns and mirror flag; ``translate``: (n, 2) shifts (rows, columns).
    """
    rng = np.random.default_rng([seed, _STREAM, epoch, step])
    out = {}
    for name in names:
        if name == "flip":
            out[name] = rng.integers(0, 2, (n, 2))
        elif name == "rot90":
            out[name] = rng.integers(0, 4, n)
        elif name == "dihedral":
            g = rng.integers(0, 8, n)
            out[name] = np.stack([g % 4, g // 4], 1)
        elif name == "translate":
            s = translate_range(side)
            out[name] = rng.integers(-s, s + 1, (n, 2))
        else:
            raise ValueError(f"unknown augmentation {name!r}; choose from "
                             f"{', '.join(AUGMENTATIONS)}")
    return {k: torch.from_numpy(v).long() for k, v in out.items()}


def _mirror(x: Tensor, flag: Tensor, dim: int) -> Tensor:
    """``x`` (B, C, H, W) with the images where ``flag`` (B,) is 1 mirrored along ``dim``."""
    return torch.where(flag.bool().view(-1, 1, 1, 1), x.flip(dim), x)


def _rotate(x: Tensor, k: Tensor) -> Tensor:
    """Image i of ``x`` (B, C, S, S) turned by ``k[i]`` quarter turns."""
    out = x.clone()
    for q in (1, 2, 3):
        m = k == q
        if bool(m.any()):
            out[m] = torch.rot90(x[m], q, dims=(2, 3))
    return out


def _roll(x: Tensor, shift: Tensor) -> Tensor:
    """Image i of ``x`` (B, C, H, W) rolled by ``shift[i]`` = (rows, columns), circularly."""
    b, c, h, w = x.shape
    rows = (torch.arange(h) - shift[:, :1]) % h  # (B, H): output row r reads row r - d_y
    cols = (torch.arange(w) - shift[:, 1:]) % w  # (B, W)
    return x[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: Tensor, names: Sequence[str], *, seed: int, epoch: int, step: int,
                  rows: Tensor | None = None, n: int | None = None) -> Tensor:
    """``x`` transformed by the draws of ``(seed, epoch, step)`` (module docstring).

    Args:
        x: Images, shape (b, C, H, W), on the CPU.
        names: The augmentations, in order (``train.augment``); empty: ``x`` itself.
        seed, epoch, step: What the draws depend on (``train.seed``, 0-based epoch, step).
        rows: The rows of the global batch that ``x`` holds (this rank's shard), shape (b,);
            None: all of them.
        n: Size of the global batch (None: ``b``).

    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> y = augment_batch(x, ["dihedral"], seed=0, epoch=0, step=0)
    >>> sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())  # pixels are moved only
    True
    """
    if not names:
        return x
    if {"rot90", "dihedral"} & set(names) and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rot90 and dihedral need square images, got {x.shape[-2]}x"
                         f"{x.shape[-1]}; resize them (data.image_size) or use flip")
    b = len(x)
    n = b if n is None else n
    rows = torch.arange(b) if rows is None else rows
    draws = {k: v[rows] for k, v in draw(names, n, seed=seed, epoch=epoch, step=step,
                                         side=x.shape[-1]).items()}
    for name in names:
        d = draws[name]
        if name == "flip":
            x = _mirror(_mirror(x, d[:, 0], 3), d[:, 1], 2)
        elif name == "rot90":
            x = _rotate(x, d)
        elif name == "dihedral":
            x = _rotate(_mirror(x, d[:, 1], 3), d[:, 0])
        else:  # translate
            x = _roll(x, d)
    return x
