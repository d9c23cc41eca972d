"""The astro set: Sersic ellipticals, log-spiral galaxies and Moffat stars drawn with
deepbench (the authors' ``notebooks/astronomical_objects.ipynb``); the target adds the paper's
Poisson SNR noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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

__all__ = ["make_astro"]

def _astro_ranges(image_size: int) -> dict:
    """Drawing ranges of the authors' astro notebook (integers: ``[low, high)``), scaled to S px."""
    s = image_size
    return {
        "elliptical_radius": [_scaled(10, s), s],
        "elliptical_sersic_n": [0.5, 1.5],
        "elliptical_ellip": [0.1, 0.9],
        "elliptical_theta_rad": [-1.5, 1.5],
        "elliptical_center": [0, s],
        "spiral_winding_number": [2, 9],
        "spiral_pitch_rad": [1, 4],
        "spiral_radius": 25 * s / 100,
        "spiral_arm_thickness": 1.0,
        "star_radius": [max(1, _scaled(1, s)), max(2, _scaled(10, s))],
        "star_count": [1, 10],
        "star_amplitude": [1.0, 50.0],
        "star_center": [0, s],
        "source_psf_sigma": 0.7,
    }


def _draw_astro(label: int, rng: np.random.Generator, image_size: int, r: dict,
                spirals: dict) -> np.ndarray:
    """Draw one astro image ``(S, S)``; labels 0 elliptical, 1 spiral, 2 stars."""
    astro = _import_optional("deepbench.astro_object")
    dims = (image_size, image_size)
    if label == 0:  # Sersic2D, then deepbench's sigma = 0.7 PSF; noise_level 0 adds nothing
        radius = int(rng.integers(*r["elliptical_radius"]))
        n, ellip, theta = (float(rng.uniform(*r[k])) for k in
                           ("elliptical_sersic_n", "elliptical_ellip", "elliptical_theta_rad"))
        cx, cy = (int(v) for v in rng.integers(*r["elliptical_center"], size=2))
        galaxy = astro.GalaxyObject(image_dimensions=dims, noise_level=0.0, n=n, ellipse=ellip,
                                    theta=theta, radius=radius, seed=0)
        return galaxy.create_object(center_x=cx, center_y=cy)
    if label == 1:  # deepbench ignores the centre: every spiral is centred
        key = (int(rng.integers(*r["spiral_winding_number"])),
               int(rng.integers(*r["spiral_pitch_rad"])))
        if key not in spirals:
            spiral = astro.SpiralGalaxyObject(
                image_dimensions=dims, winding_number=key[0], spiral_pitch=key[1],
                radius=r["spiral_radius"], noise_level=0.0, seed=0)
            spirals[key] = spiral.create_object(center_x=0, center_y=0)
        return spirals[key]
    radius = int(rng.integers(*r["star_radius"]))
    count = int(rng.integers(*r["star_count"]))
    xs, ys = rng.integers(*r["star_center"], size=(2, count))
    amplitude = float(rng.uniform(*r["star_amplitude"]))
    return _stars_image(xs, ys, radius=radius, amplitude=amplitude, image_size=image_size)


def _stars_image(xs: np.ndarray, ys: np.ndarray, *, radius: int, amplitude: float,
                 image_size: int) -> np.ndarray:
    r"""Sum of Moffat stars blurred by deepbench's PSF, ``(S, S)``.

    Each star is astropy's ``Moffat2D`` with ``alpha = 1``,
    :math:`A\,(1 + ((x - x_0)^2 + (y - y_0)^2)/\gamma^2)^{-1}`, on deepbench's grid (x is the
    column index). deepbench blurs each star (sigma 0.7, reflect) and the paper sums them; the
    blur is linear, so blurring the sum once is the same image, about 10x faster than
    evaluating one astropy model per star.
    """
    grid = np.arange(image_size, dtype=np.float64)
    r2 = ((grid[None, None, :] - xs[:, None, None]) ** 2
          + (grid[None, :, None] - ys[:, None, None]) ** 2)  # (count, S, S)
    profile = (amplitude / (1.0 + r2 / radius**2)).sum(axis=0)  # (S, S)
    return ndimage.gaussian_filter(profile, sigma=0.7, mode="reflect", truncate=4.0)


def make_astro(
    n_per_class: int,
    *,
    protocol: str = "clean",
    test_fraction: float = 0.2,
    snr: float = 0.2,
    image_size: int = 100,
    random_state: RandomState = None,
) -> DomainSplits:
    r"""Draw the astro set: ellipticals (0), spirals (1) and stars (2); target = SNR noise.

    Objects are drawn with deepbench 0.2.3 as in the authors'
    ``notebooks/astronomical_objects.ipynb`` (``randint(a, b)`` is ``[a, b)``):

    - elliptical: astropy ``Sersic2D`` with amplitude 1, ``r_eff = randint(10, 100)``,
      ``n ~ U(0.5, 1.5)``, ``ellip ~ U(0.1, 0.9)``, ``theta ~ U(-1.5, 1.5)`` rad, centre
      ``randint(0, 100)`` per axis;
    - spiral: ``winding_number = randint(2, 9)`` log-spiral arms of pitch ``randint(1, 4)`` rad,
      radius 25, arm thickness 1, amplitude 1. deepbench ignores the requested centre, so every
      spiral is centred and the class holds only 7 x 3 = 21 distinct images: no protocol can
      keep spiral content out of the test set without changing the paper's distribution;
    - stars: ``randint(1, 10)`` ``Moffat2D`` stars (alpha 1) at centres ``randint(0, 100)``,
      sharing ``gamma = randint(1, 10)`` and amplitude ``U(1, 50)``.

    Every object then gets deepbench's own Gaussian PSF (sigma 0.7 px), which the paper keeps
    in the **source** images. Intensities are not normalised, as in the paper: stars peak at
    tens, spirals near 1-2 and ellipticals at a few, so the overall scale alone is a
    class-dependent shortcut. For another ``image_size`` S the pixel bounds become
    ``round(b S / 100)`` (at least 1 px for the star radius) and the spiral radius 0.25 S; the
    PSF width stays 0.7 px. The target is :func:`poisson_snr_noise` with ``snr``
    (:math:`\lambda = 4 \bar x` at the paper's 0.2).

    Under ``protocol="paper"`` the target is the noisy copy of the same split (the authors used
    ``random_state=42`` for both domains here). Under ``"clean"`` each domain has its own base
    images; ellipticals and stars have continuous parameters and so never repeat, spirals do
    (see above).

    Args:
        n_per_class: Base images per class and domain, split into train and test.
        protocol: ``"clean"`` (disjoint base images) or ``"paper"`` (corrupted copies).
        test_fraction: Fraction of each class held out for test (rounded up).
        snr: Noise ratio of :func:`poisson_snr_noise`; the paper uses 0.2.
        image_size: Side S of the square images; at least 20.
        random_state: Seed or generator; ``params["seed"]`` reproduces the result.

    Returns:
        The splits, with ``class_names = ("elliptical", "spiral", "stars")``.

    Raises:
        ValueError: On an invalid argument; the message says which and how to fix it.

    Example:
        >>> d = make_astro(2, image_size=32, random_state=0)
        >>> d.x_train_s.shape, d.class_names
        ((3, 32, 32, 1), ('elliptical', 'spiral', 'stars'))
    """
    n_per_class = _check_int(n_per_class, "n_per_class", minimum=2,
                             hint="each class needs one train and one test image")
    protocol = _check_protocol(protocol)
    test_fraction = _check_open_unit(test_fraction, "test_fraction", hint="e.g. 0.2")
    snr = _check_open_unit(snr, "snr", hint="the paper uses 0.2 for astro")
    image_size = _check_int(image_size, "image_size", minimum=20, hint="the paper uses 100",
                            maximum=_MAX_IMAGE_SIZE)
    seed = _resolve_seed(random_state)
    params = _common_params("astro", "noise", n_per_class, test_fraction, image_size)
    ranges = _astro_ranges(image_size)
    params.update(snr=snr, noise_lambda_per_unit_mean=1 / snr - 1, distinct_spirals=21, **ranges)
    spirals: dict[tuple[int, int], np.ndarray] = {}  # 21 possible spirals; draw each once

    def draw(domain: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        images = np.empty((3 * n_per_class, image_size, image_size, 1))
        for i in range(3 * n_per_class):
            images[i, :, :, 0] = _draw_astro(i // n_per_class, rng, image_size, ranges, spirals)
        return images, np.repeat(np.arange(3), n_per_class)

    def shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return poisson_snr_noise(x, snr=snr, random_state=rng)

    return _make_splits(draw, shift, n_test=params["n_test_per_class"], protocol=protocol,
                        seed=seed, class_names=("elliptical", "spiral", "stars"), params=params)
