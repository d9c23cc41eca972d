"""The shapes set: lines, rectangles and ellipses drawn with deepbench's rasteriser
(the authors' ``notebooks/shapes.ipynb``); the target adds the paper's Poisson SNR noise."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from sidda.errors import InputError
from sidda.generators._common import (
    _MAX_IMAGE_SIZE,
    DomainSplits,
    RandomState,
    _check_int,
    _check_open_unit,
    _check_protocol,
    _common_params,
    _import_optional,
    _make_splits,
    _resolve_seed,
    _scaled,
)
from sidda.generators.shifts import poisson_snr_noise

__all__ = ["make_shapes"]

_MAX_REDRAWS = 1000  # clean shapes: consecutive duplicate draws before giving up


@functools.lru_cache(maxsize=4)
def _shape_drawer(image_size: int) -> Any:
    """Return deepbench's ShapeGenerator with the pixel grid built once, not once per shape.

    deepbench 0.2.3 rebuilds the (S*S, 2) grid with a Python ``zip`` in every call, which costs
    about 6 of the 8 ms per shape. The override keeps its rasterisation rule exactly: a pixel
    (x, y) is set when ``Path(patch.get_verts()).contains_points`` holds, written to
    ``out[x, y]``, and cleared inside the cutout patch.
    """
    shapes = _import_optional("deepbench.shapes")
    path = _import_optional("matplotlib.path")

    class _Drawer(shapes.Shapes):
        def __init__(self, size: int) -> None:
            super().__init__(image_shape=(size, size))
            grid = np.meshgrid(np.arange(size), np.arange(size))
            self._points = np.stack([g.ravel() for g in grid], axis=1)  # (S*S, 2), as deepbench

        def _convert_patch_to_image(self, image: Any, cutout: Any = None) -> np.ndarray:
            out = np.zeros(self.image_shape)
            inside = self._points[path.Path(image.get_verts()).contains_points(self._points)]
            out[inside[:, 0], inside[:, 1]] = 1.0
            if cutout is not None:
                hole = self._points[path.Path(cutout.get_verts()).contains_points(self._points)]
                out[hole[:, 0], hole[:, 1]] = 0.0
            return out

    return _Drawer(image_size)


def _shape_ranges(image_size: int) -> dict:
    """``[low, high)`` integer ranges of the authors' shapes notebook, scaled to ``image_size``."""
    s = image_size
    return {
        "line_endpoint": [0, s],
        "line_width": 1,
        "rectangle_center": [_scaled(25, s), _scaled(75, s)],
        "rectangle_size_low": 1,
        "circle_center": [_scaled(10, s), _scaled(90, s)],
        "circle_size_clip": [_scaled(10, s), _scaled(30, s)],
        "circle_angle_deg": [0.0, 360.0],
    }


def _draw_shape(label: int, rng: np.random.Generator, image_size: int, r: dict) -> np.ndarray:
    """Draw one shape image ``(S, S)`` in {0, 1}; labels 0 line, 1 rectangle, 2 ellipse."""
    drawer, s = _shape_drawer(image_size), image_size
    if label == 0:  # line; deepbench's width randint(1, 2) is always 1
        sx, sy, ex, ey = (int(v) for v in rng.integers(0, s, size=4))
        while (sx, sy) == (ex, ey):
            ex, ey = (int(v) for v in rng.integers(0, s, size=2))
        return drawer.create_line(start=(sx, sy), end=(ex, ey), line_width=1)
    if label == 1:  # axis-aligned outline; the paper draws an angle but never passes it
        cx, cy = (int(v) for v in rng.integers(*r["rectangle_center"], size=2))
        width = int(rng.integers(1, min(cx, s - cx) * 2 + 1))
        height = int(rng.integers(1, min(cy, s - cy) * 2 + 1))
        return drawer.create_rectangle(center=(cx, cy), width=width, height=height)
    lo, hi = r["circle_size_clip"]  # "circle": a rotated 1-px ellipse outline
    cx, cy = (int(v) for v in rng.integers(*r["circle_center"], size=2))
    max_w, max_h = (max(lo, min(hi, min(c, s - c) * 2)) for c in (cx, cy))
    width, height = int(rng.integers(lo, max_w + 1)), int(rng.integers(lo, max_h + 1))
    angle = float(rng.uniform(0.0, 360.0))
    return drawer.create_ellipse(center=(cx, cy), width=width, height=height, angle=angle)


def make_shapes(
    n_per_class: int,
    *,
    protocol: str = "clean",
    test_fraction: float = 0.2,
    snr: float = 0.05,
    image_size: int = 100,
    random_state: RandomState = None,
) -> DomainSplits:
    r"""Draw the shapes set: lines (0), rectangles (1) and ellipses (2); target = SNR noise.

    Source images are binary {0, 1}, ``(N, S, S, 1)``, rasterised with deepbench 0.2.3's rules
    (a matplotlib patch tested with ``Path.contains_points`` on the integer grid; outlines
    subtract an inner cutout). Parameters follow the authors' ``notebooks/shapes.ipynb`` for a
    100-px image, where ``randint(a, b)`` draws from ``[a, b)``:

    - line: endpoints ``randint(0, 100)`` per coordinate, redrawn while equal; width 1;
    - rectangle: centre ``randint(25, 75)`` per axis, ``width = randint(1, 2 min(c, 100-c) + 1)``
      and likewise the height; axis-aligned 1-px outline (width or height 1 gives a bar);
    - ellipse: centre ``randint(10, 90)``, ``max = clip(2 min(c, 100-c), 10, 30)``,
      ``width, height = randint(10, max + 1)``, ``angle ~ U(0, 360)``; 1-px outline.

    For another ``image_size`` S every pixel bound b above becomes ``round(b S / 100)``; the
    line width stays 1 px. The target is :func:`poisson_snr_noise` with ``snr``, so its pixel
    values are integers up to about 7 at ``snr = 0.05`` (:math:`\lambda = 19 \bar x`).

    Under ``protocol="paper"`` the split is drawn once for both domains. The authors split the
    clean set with ``random_state=42`` and the noisy copies with 41, which put about 80% of the
    target test images' content in the source training set; one split index removes that
    leak while keeping the paper's "target = corrupted copy" construction. Under ``"clean"``
    the two domains get independent base images, and exact duplicates and blank images are
    redrawn, so no image appears twice anywhere in the base pool. (About 0.9% of deepbench's
    lines rasterise to nothing, e.g. those starting on the last row, whose 1-px rotated
    rectangle misses every grid point; the paper's data keep these blank "lines".)

    Args:
        n_per_class: Base images per class and domain, split into train and test.
        protocol: ``"clean"`` (disjoint base images) or ``"paper"`` (corrupted copies).
        test_fraction: Fraction of each class held out for test (rounded up).
        snr: Noise ratio of :func:`poisson_snr_noise`; the paper uses 0.05.
        image_size: Side S of the square images; at least 20.
        random_state: Seed or generator; ``params["seed"]`` reproduces the result.

    Returns:
        The splits, with ``class_names = ("line", "rectangle", "circle")``.

    Raises:
        ValueError: On an invalid argument; the message says which and how to fix it.

    Example:
        >>> d = make_shapes(4, random_state=0)
        >>> d.x_train_s.shape, d.x_test_t.shape, sorted(np.unique(d.x_train_s).tolist())
        ((9, 100, 100, 1), (3, 100, 100, 1), [0.0, 1.0])
    """
    n_per_class = _check_int(n_per_class, "n_per_class", minimum=2,
                             hint="each class needs one train and one test image")
    protocol = _check_protocol(protocol)
    test_fraction = _check_open_unit(test_fraction, "test_fraction", hint="e.g. 0.2")
    snr = _check_open_unit(snr, "snr", hint="the paper uses 0.05 for shapes")
    image_size = _check_int(image_size, "image_size", minimum=20, hint="the paper uses 100",
                            maximum=_MAX_IMAGE_SIZE)
    seed = _resolve_seed(random_state)
    params = _common_params("shapes", "noise", n_per_class, test_fraction, image_size)
    ranges = _shape_ranges(image_size)
    params.update(snr=snr, noise_lambda_per_unit_mean=1 / snr - 1, deduplicated=protocol == "clean",
                  **ranges)
    class_names = ("line", "rectangle", "circle")
    seen: set[bytes] = set()  # shared by both domains under "clean"

    def draw(domain: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        images = np.empty((3 * n_per_class, image_size, image_size, 1))
        for i in range(3 * n_per_class):
            label = i // n_per_class
            for _ in range(_MAX_REDRAWS):
                img = _draw_shape(label, rng, image_size, ranges)
                key = img.astype(np.uint8).tobytes()
                if protocol == "paper" or (key not in seen and img.any()):
                    seen.add(key)
                    break
            else:
                raise InputError(
                    f"could not draw {2 * n_per_class} distinct {class_names[label]} images of "
                    f"{image_size} px for protocol='clean' ({_MAX_REDRAWS} duplicates in a "
                    "row); lower n_per_class, raise image_size or use protocol='paper'")
            images[i, :, :, 0] = img
        return images, np.repeat(np.arange(3), n_per_class)

    def shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return poisson_snr_noise(x, snr=snr, random_state=rng)

    return _make_splits(draw, shift, n_test=params["n_test_per_class"], protocol=protocol,
                        seed=seed, class_names=class_names, params=params)
