r"""Draw samples per class, source beside target (``sidda data show``): :func:`sample_grid`,
and the colour mapping it uses, :func:`to_rgb`, which the report's galleries can call too.

:func:`to_rgb` turns images (N, C, H, W) into 8-bit RGB (N, H, W, 3). Bands go to colours by
``rgb`` = (band for R, band for G, band for B), or one band for grey. Without ``rgb``: one band
is grey; two bands give R = band 1, G = their mean, B = band 0; three or more give R, G, B =
bands 0, 1, 2 (the order of RGB photographs). Survey bands are stored blue to red (g, r, z as
bands 0, 1, 2), so astronomical colour is ``rgb=(2, 1, 0)``: z -> R, r -> G, g -> B
(``sidda data show`` uses that order for FITS imports). Then a stretch maps values v to
[0, 1], with limits ``lo`` (``minimum``) and ``hi = lo + stretch_range`` taken from all the
images given together (or from each image, ``per_image``):

.. math::

    \text{linear:}\quad & y = \operatorname{clip}((v - lo) / (hi - lo),\ 0,\ 1),
        \quad lo, hi = \text{0.5th, 99.5th percentiles} \\
    \text{asinh:}\quad & y = \operatorname{asinh}(Q\,u) / \operatorname{asinh}(Q),\quad
        u = \operatorname{clip}((v - lo) / (hi - lo), 0, 1),
        \quad lo = \text{0.5th percentile},\ hi = \max \\
    \text{lupton:}\quad & \text{Lupton et al. (2004), }
        \texttt{astropy.visualization.make\_lupton\_rgb}(r, g, b, lo, hi - lo, Q)

``asinh`` stretches each colour on its own; ``lupton`` stretches the intensity
:math:`I = (r + g + b) / 3 - lo` by :math:`\operatorname{asinh}(Q I / s)` and scales the three
colours alike, so colours are kept for bright sources. Its defaults: ``lo`` is the median of
the pixels (the sky of a cutout maps to black), and the stretch s makes the 99.5th percentile
of :math:`I` white: :math:`s = Q\,I_{99.5} / \sinh(10 \operatorname{asinh}(Q / 10))` (astropy
maps I to :math:`25.5\,\operatorname{asinh}(Q I / s) / \operatorname{asinh}(Q / 10)`).
``Q`` (``q``, default 8 as astropy) sets how soon the stretch turns logarithmic.

matplotlib and astropy are imported inside the functions, so ``import sidda`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sidda._text import escape_mathtext
from sidda.datasets.imageset import DomainData
from sidda.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MAX_PER_CLASS", "STRETCHES", "figure_path", "sample_grid", "to_rgb"]

#: The stretches of :func:`to_rgb`.
STRETCHES = ("linear", "asinh", "lupton")
#: Most images per class and domain that :func:`sample_grid` draws.
MAX_PER_CLASS = 64


def _planes(x: np.ndarray, rgb: Sequence[int] | None) -> np.ndarray:
    """(N, C, H, W) -> (N, 3, H, W): the bands drawn as R, G, B."""
    c = x.shape[1]
    if rgb is None:
        if c == 1:
            return np.repeat(x, 3, axis=1)
        if c == 2:
            return np.stack([x[:, 1], x.mean(1), x[:, 0]], axis=1)
        return x[:, :3]
    rgb = list(rgb)
    if len(rgb) not in (1, 3) or not all(isinstance(b, int | np.integer) for b in rgb):
        raise InputError(f"rgb must give 3 bands (for R, G, B) or 1 (grey), e.g. 2,1,0; got "
                         f"{rgb!r}")
    bad = [b for b in rgb if not 0 <= b < c]
    if bad:
        raise InputError(f"rgb names band {bad[0]}, but the images have {c} band(s) "
                         f"(0..{c - 1})")
    return x[:, rgb * 3 if len(rgb) == 1 else rgb]


def _limits(v: np.ndarray, stretch: str, minimum: float | None, stretch_range: float | None,
            q: float) -> tuple[float, float]:
    """(lo, hi - lo) of values ``v`` (3, ...) for a stretch (module docstring)."""
    if stretch == "lupton":
        lo = float(np.median(v)) if minimum is None else minimum
        if stretch_range is None:
            top = float(np.percentile(v.mean(0) - lo, 99.5))
            stretch_range = q * top / math.sinh(10 * math.asinh(q / 10))
    else:
        lo = float(np.percentile(v, 0.5)) if minimum is None else minimum
        if stretch_range is None:
            stretch_range = float(v.max() if stretch == "asinh" else np.percentile(v, 99.5)) - lo
    tiny = 1e-9 * max(1.0, abs(lo), float(np.abs(v).max(initial=0)))  # flat images: no 0 / 0
    return lo, max(stretch_range, tiny)


def _stretched(v: np.ndarray, stretch: str, lo: float, span: float, q: float) -> np.ndarray:
    """(3, H', W) values -> (H', W, 3) uint8."""
    if stretch == "lupton":
        from astropy.visualization import make_lupton_rgb

        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return make_lupton_rgb(v[0], v[1], v[2], minimum=lo, stretch=span, Q=q)
    u = np.clip((v - lo) / span, 0.0, 1.0)
    if stretch == "asinh":
        u = np.arcsinh(q * u) / math.asinh(q)
    return np.round(np.moveaxis(u, 0, -1) * 255).astype(np.uint8)


def to_rgb(
    images: torch.Tensor | np.ndarray,
    *,
    rgb: Sequence[int] | None = None,
    stretch: str = "linear",
    q: float = 8.0,
    minimum: float | None = None,
    stretch_range: float | None = None,
    per_image: bool = False,
) -> np.ndarray:
    """Images (N, C, H, W) as 8-bit colour (N, H, W, 3), by the module docstring's rules.

    Args:
        images: Any float or integer values, e.g. as stored or as normalised.
        rgb: Bands for R, G, B (e.g. ``(2, 1, 0)`` for g, r, z stored in that order), or one
            band for grey; None: the module's default for the band count.
        stretch: ``"linear"``, ``"asinh"`` or ``"lupton"``.
        q: Softening Q of ``asinh`` and ``lupton`` (> 0).
        minimum: The value drawn black; None: from the images (0.5th percentile; lupton: the
            median).
        stretch_range: ``hi - lo``; None: from the images (module docstring).
        per_image: Limits from each image on its own instead of from all of them.

    >>> x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)  # two grey 2x2 images
    >>> to_rgb(x, minimum=0, stretch_range=7)[1, :, :, 0].tolist()
    [[146, 182], [219, 255]]

    Raises:
        InputError: an unknown stretch, a band ``rgb`` names that the images lack, q or
            stretch_range not > 0.
    """
    if stretch not in STRETCHES:
        raise InputError(f"unknown stretch {stretch!r}; valid stretches are "
                         f"{', '.join(STRETCHES)}")
    if not (isinstance(q, int | float) and math.isfinite(q) and q > 0):
        raise InputError(f"the stretch's Q must be a number > 0, got {q!r}; e.g. 8")
    if stretch_range is not None and not (math.isfinite(stretch_range) and stretch_range > 0):
        raise InputError(f"the stretch range must be > 0, got {stretch_range!r}")
    if minimum is not None and not math.isfinite(minimum):
        raise InputError(f"the stretch minimum must be a finite number, got {minimum!r}")
    x = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    if x.ndim != 4:
        raise InputError(f"to_rgb takes images (N, C, H, W), got shape {x.shape}")
    v = _planes(x.astype(np.float64), rgb)  # (N, 3, H, W)
    n, _, h, w = v.shape
    if n == 0:
        return np.zeros((0, h, w, 3), dtype=np.uint8)
    if per_image:
        return np.stack([_stretched(im, stretch, *_limits(im, stretch, minimum, stretch_range,
                                                          q), q) for im in v])
    lo, span = _limits(np.moveaxis(v, 1, 0), stretch, minimum, stretch_range, q)
    tall = np.moveaxis(v, 1, 0).reshape(3, n * h, w)  # every image below the previous one
    return _stretched(tall, stretch, lo, span, q).reshape(n, h, w, 3)


def sample_grid(
    data: DomainData,
    *,
    per_class: int = 6,
    class_names: list[str] | None = None,
    random_state: int = 0,
    scale: str = "domain",
    title: str = "",
    rgb: Sequence[int] | None = None,
    stretch: str = "linear",
    q: float = 8.0,
    minimum: float | None = None,
    stretch_range: float | None = None,
) -> Figure:
    """A grid of training images: one row per class, source samples left, target right.

    A target without labels fills its side with random samples instead. Images are drawn with
    :func:`to_rgb` (``rgb``, ``stretch``, ``q``, ``minimum``, ``stretch_range``), its limits
    taken per domain from the shown images (``scale="domain"``, which keeps intensity
    differences between images visible) or per image (``scale="image"``). A grid holds at
    most :data:`MAX_PER_CLASS` columns per domain, and no more than the largest class has.
    Labels are drawn literally (``$`` is escaped).

    Returns:
        A matplotlib ``Figure`` (no pyplot state), to ``savefig``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is installed with the plot extra
        raise ImportError("drawing needs matplotlib: pip install 'sidda[plot]'") from e
    if scale not in ("domain", "image"):
        raise InputError(f"scale must be 'domain' or 'image', got {scale!r}")
    if isinstance(per_class, bool) or not 1 <= per_class <= MAX_PER_CLASS:
        raise InputError(f"--per-class must lie in 1..{MAX_PER_CLASS}, got {per_class}")
    rng = np.random.default_rng(random_state)
    k = data.num_classes
    names = [escape_mathtext(n) for n in (class_names or range(k))]

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
        imgs = to_rgb(s.x[torch.tensor(flat, dtype=torch.int64)], rgb=rgb, stretch=stretch,
                      q=q, minimum=minimum, stretch_range=stretch_range,
                      per_image=scale == "image")  # (n, H, W, 3) uint8
        blocks.append((label, s, rows, dict(zip(flat, imgs, strict=True))))
    per_class = max(1, max(len(r) for _, _, rows, _ in blocks for r in rows))

    cols = 2 * per_class + 1  # source block, a narrow gap, target block
    cell = 1.0 if per_class <= 8 else 0.7
    width, height = (2 * per_class + 0.4) * cell + 1.3, k * cell + 1.0
    fig = Figure(figsize=(width, height), dpi=100)
    grid = fig.add_gridspec(k, cols, left=1.3 / width, right=0.99, bottom=0.02,
                            top=1 - 0.8 / height, wspace=0.05, hspace=0.05,
                            width_ratios=[1] * per_class + [0.4] + [1] * per_class)
    for b, (label, s, rows, imgs) in enumerate(blocks):
        c0 = b * (per_class + 1)
        box = grid[0, c0 : c0 + per_class].get_position(fig)
        note = ", unlabelled: random samples" if s.y is None else ""
        fig.text((box.x0 + box.x1) / 2, box.y1 + 0.1 / height,
                 escape_mathtext(f"{label}{note}\n{Path(s.name).name}: {len(s)} images"),
                 ha="center", va="bottom", fontsize=9)
        for r in range(k):
            for j in range(per_class):
                ax = fig.add_subplot(grid[r, c0 + j])
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if j < len(rows[r]):
                    ax.imshow(imgs[rows[r][j]], interpolation="nearest")
                if b == 0 and j == 0:
                    ax.set_ylabel(names[r], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(escape_mathtext(title), fontsize=10, x=0.01, y=0.995, ha="left", va="top")
    return fig


def figure_path(out: str | Path) -> Path:
    """The file a figure given ``--out out`` is written to: ``out``, or ``out.png`` without a
    suffix; its format must be one matplotlib writes.

    Raises:
        InputError: an unsupported suffix (the message lists the supported ones), or a folder.
    """
    from matplotlib.figure import Figure

    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    formats = sorted(Figure().canvas.get_supported_filetypes())
    if out.suffix[1:].lower() not in formats:
        raise InputError(f"{out}: cannot draw a {out.suffix} file; give --out a name ending in "
                         f"one of {', '.join('.' + f for f in formats)}, e.g. grid.png")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give --out a file name, e.g. {out / 'grid.png'}")
    return out
