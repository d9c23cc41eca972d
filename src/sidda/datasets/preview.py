r"""Images as colour pictures: :func:`to_rgb`, the mapping ``sidda data show``
(:func:`sidda.plots.sample_grid`) and the report's galleries draw with; :func:`check_colour`,
its options checked once (both commands call it before any work); :func:`colour_for`, the bands
both draw by default.

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

astropy is imported inside the function, so ``import sidda`` stays light; no matplotlib here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sidda.errors import InputError

__all__ = ["STRETCHES", "check_colour", "colour_for", "to_rgb"]

#: The stretches of :func:`to_rgb`.
STRETCHES = ("linear", "asinh", "lupton")


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
    bad = [b for b in rgb if b >= c]
    if bad:
        raise InputError(f"--rgb names band {bad[0]}, but the images have {c} band(s) "
                         f"(0..{c - 1})")
    return x[:, rgb * 3 if len(rgb) == 1 else rgb]


def _positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def check_colour(
    rgb: Sequence[int] | None = None,
    stretch: str = "linear",
    *,
    q: float = 8.0,
    minimum: float | None = None,
    stretch_range: float | None = None,
) -> tuple[int, ...] | None:
    """``rgb`` as a tuple once the colour options of :func:`to_rgb` are checked (the messages
    name the command-line options). Whether the images have the bands ``rgb`` names is
    :func:`to_rgb`'s to check.

    >>> check_colour([2, 1, 0], "asinh"), check_colour(None)
    ((2, 1, 0), None)

    Raises:
        InputError: an unknown stretch, q or stretch_range not a number > 0, a minimum that is
            not finite, ``rgb`` not 1 or 3 band numbers >= 0.
    """
    if stretch not in STRETCHES:
        raise InputError(f"--stretch must be one of {', '.join(STRETCHES)}, got {stretch!r}")
    for option, value in (("--stretch-q", q), ("--stretch-range", stretch_range)):
        if not _positive(value) and (value is not None or option == "--stretch-q"):
            raise InputError(f"{option} must be a number > 0, got {value}")
    if minimum is not None and not (isinstance(minimum, int | float)
                                    and not isinstance(minimum, bool) and math.isfinite(minimum)):
        raise InputError(f"--stretch-minimum must be a finite number, got {minimum}")
    if rgb is None:
        return None
    rgb = tuple(rgb)
    if len(rgb) not in (1, 3) or not all(
            isinstance(b, int | np.integer) and not isinstance(b, bool) and b >= 0 for b in rgb):
        raise InputError(f"--rgb takes 3 bands (for R, G, B) or 1 (grey), e.g. 2,1,0; got "
                         f"{','.join(map(str, rgb))}")
    return tuple(int(b) for b in rgb)


def colour_for(manifest: dict, channels: int, rgb: Sequence[int] | None) -> tuple[int, ...] | None:
    """The bands drawn as R, G, B: ``rgb``, else (2, 1, 0) for a FITS import with 3+ bands
    (stored blue to red: the reddest of the three is R), else None (:func:`to_rgb`'s default).

    >>> colour_for({"format": "fits"}, 3, None), colour_for({}, 3, None)
    ((2, 1, 0), None)
    """
    if rgb is not None:
        return tuple(rgb)
    return (2, 1, 0) if manifest.get("format") == "fits" and channels >= 3 else None


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
        InputError: bad options (:func:`check_colour`), a band ``rgb`` names that the images
            lack.
    """
    rgb = check_colour(rgb, stretch, q=q, minimum=minimum, stretch_range=stretch_range)
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
