"""Draw samples per class, source beside target: :func:`sample_grid` (``sidda data show``).

matplotlib is imported inside the function, so ``import sidda`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sidda.datasets.imageset import DomainData
from sidda.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["sample_grid"]

def _display(x: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) in [0, 1] for imshow."""
    img = ((x.float() - lo) / max(hi - lo, 1e-12)).clamp(0, 1).numpy()
    return img[0] if img.shape[0] < 3 else np.moveaxis(img[:3], 0, -1)


def sample_grid(
    data: DomainData,
    *,
    per_class: int = 6,
    class_names: list[str] | None = None,
    random_state: int = 0,
    scale: str = "domain",
    title: str = "",
) -> Figure:
    """A grid of training images: one row per class, source samples left, target right.

    A target without labels fills its side with random samples instead. Pixel values are
    mapped to grey levels (or RGB) per domain between the 0.5th and 99.5th percentiles of the
    shown images (``scale="domain"``, which keeps intensity differences between images
    visible) or per image (``scale="image"``). One- and two-band images show their first band
    in grey; three or more bands show the first three as RGB.

    Returns:
        A matplotlib ``Figure`` (no pyplot state), to ``savefig``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is installed with the plot extra
        raise ImportError("drawing needs matplotlib: pip install 'sidda[plot]'") from e
    if scale not in ("domain", "image"):
        raise InputError(f"scale must be 'domain' or 'image', got {scale!r}")
    if per_class < 1:
        raise InputError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(random_state)
    k = data.num_classes
    names = class_names or [str(i) for i in range(k)]

    def pick(s) -> list[list[int]]:  # noqa: ANN001 - ImageSet
        if s.y is None:
            idx = rng.permutation(len(s))[: k * per_class].tolist()
            return [idx[r * per_class:(r + 1) * per_class] for r in range(k)]
        y = s.y.numpy()
        return [rng.permutation(np.flatnonzero(y == c))[:per_class].tolist() for c in range(k)]

    blocks = []
    for label, s in (("source", data.train_s), ("target", data.train_t)):
        rows = pick(s)
        flat = [i for r in rows for i in r]
        imgs = s.x[torch.tensor(flat, dtype=torch.int64)]  # (n, C, H, W)
        lo, hi = np.percentile(imgs.numpy(), [0.5, 99.5]).tolist()
        blocks.append((label, s, rows, dict(zip(flat, imgs, strict=True)), lo, hi))

    cols = 2 * per_class + 1  # source block, a narrow gap, target block
    cell = 1.0 if per_class <= 8 else 0.7
    width, height = (2 * per_class + 0.4) * cell + 1.3, k * cell + 1.0
    fig = Figure(figsize=(width, height), dpi=100)
    grid = fig.add_gridspec(k, cols, left=1.3 / width, right=0.99, bottom=0.02,
                            top=1 - 0.8 / height, wspace=0.05, hspace=0.05,
                            width_ratios=[1] * per_class + [0.4] + [1] * per_class)
    for b, (label, s, rows, imgs, lo, hi) in enumerate(blocks):
        c0 = b * (per_class + 1)
        box = grid[0, c0 : c0 + per_class].get_position(fig)
        note = ", unlabelled: random samples" if s.y is None else ""
        fig.text((box.x0 + box.x1) / 2, box.y1 + 0.1 / height,
                 f"{label}{note}\n{Path(s.name).name}: {len(s)} images",
                 ha="center", va="bottom", fontsize=9)
        for r in range(k):
            for j in range(per_class):
                ax = fig.add_subplot(grid[r, c0 + j])
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if j < len(rows[r]):
                    x = imgs[rows[r][j]]
                    a, z = (float(x.min()), float(x.max())) if scale == "image" else (lo, hi)
                    ax.imshow(_display(x, a, z), cmap="gray", vmin=0, vmax=1,
                              interpolation="nearest")
                if b == 0 and j == 0:
                    ax.set_ylabel(names[r], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, y=0.995, ha="left", va="top")
    return fig
