r"""The three target shifts of the paper, each a pure function of NHWC arrays.

.. math::

    \text{poisson\_snr\_noise:}\quad \tilde x_i = \operatorname{clip}(x_i + P_i, 0, 255),
    \quad P_i \sim \operatorname{Poisson}(\lambda_i),\quad
    \lambda_i = \bar x_i\,(1/\mathrm{snr} - 1),

    \text{shot\_noise:}\quad \tilde x = \operatorname{clip}(\operatorname{Poisson}(p\,x)/p, 0, 1),

    \text{gaussian\_psf:}\quad \tilde x = \operatorname{clip}(G_\sigma * x, 0, 1),

where :math:`\bar x_i` is the mean of image :math:`i` and :math:`p` the peak count.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage

from sidda.errors import InputError
from sidda.generators._common import (
    RandomState,
    _check_images,
    _check_open_unit,
    _check_random_state,
)

__all__ = ["gaussian_psf", "poisson_snr_noise", "shot_noise"]

_SHOT_PEAK = 0.05 * 255  # 12.75 counts at full scale, as in the authors' mnistm.ipynb
_PSF_SIGMA = 2.0


def poisson_snr_noise(
    images: np.ndarray, *, snr: float, random_state: RandomState = None
) -> np.ndarray:
    r"""Add the paper's Poisson "SNR" noise (shapes: snr=0.05, astro: snr=0.2).

    For each image :math:`i` with mean :math:`\bar x_i` over all pixels and channels,

    .. math::

        \lambda_i = \bar x_i\,(1/\mathrm{snr} - 1), \qquad
        \tilde x_i = \operatorname{clip}(x_i + P_i,\ 0,\ 255), \qquad
        P_i \sim \operatorname{Poisson}(\lambda_i)\ \text{i.i.d. per pixel}.

    The noise is *added*, integer-valued and **not zero-mean**: before clipping,
    :math:`\mathbb E[\tilde x_i] = \bar x_i / \mathrm{snr}`, so ``snr`` is the ratio of the
    clean mean to the noisy mean. Its level follows the image mean, which varies with class
    and object size, so the noise level is itself a class cue.

    Args:
        images: ``(N, H, W, C)`` non-negative images.
        snr: Ratio in (0, 1); smaller means more noise (``1/snr - 1`` counts per unit mean).
        random_state: Seed or generator for the Poisson draws.

    Returns:
        ``(N, H, W, C)`` float32 noisy images.

    Raises:
        ValueError: On a non-NHWC array, an image with negative mean or ``snr`` outside (0, 1).

    Example:
        >>> x = np.zeros((2, 3, 3, 1))
        >>> float(poisson_snr_noise(x, snr=0.05, random_state=0).max())  # lam = 0 if blank
        0.0
    """
    x = _check_images(images, "poisson_snr_noise")
    snr = _check_open_unit(snr, "snr", hint="the paper uses 0.05 for shapes and 0.2 for astro")
    rng = _check_random_state(random_state)
    lam = x.mean(axis=(1, 2, 3)) * (1.0 / snr - 1.0)  # (N,)
    invalid = ~np.isfinite(lam) | (lam < 0)  # (N,)
    if invalid.any():
        bad = int(np.flatnonzero(invalid)[0])
        raise InputError(f"poisson_snr_noise needs finite images with non-negative mean; image "
                         f"{bad} has mean {x[bad].mean()!r}; shift or clip the images first")
    noise = rng.poisson(lam[:, None, None, None], size=x.shape)  # (N, H, W, C)
    return np.clip(x + noise, 0.0, 255.0).astype(np.float32)


def shot_noise(
    images: np.ndarray, *, peak: float = _SHOT_PEAK, random_state: RandomState = None
) -> np.ndarray:
    r"""Apply photon shot noise with ``peak`` counts at full scale (the MNIST-M "noise" target).

    .. math::

        \tilde x = \operatorname{clip}\!\left(\frac{\operatorname{Poisson}(p\,x')}{p},
        \ 0,\ 1\right), \qquad x' = \operatorname{clip}(x, 0, 1),

    so that before the final clip :math:`\mathbb E[\tilde x] = x'` and
    :math:`\operatorname{Var}[\tilde x] = x'/p`. The default :math:`p = 0.05 \cdot 255 = 12.75`
    is the paper's.

    Args:
        images: ``(N, H, W, C)`` images in [0, 1].
        peak: Expected count of a pixel at value 1; larger means less noise.
        random_state: Seed or generator for the Poisson draws.

    Returns:
        ``(N, H, W, C)`` float32 images in [0, 1].

    Raises:
        ValueError: On a non-NHWC array or ``peak <= 0``.

    Example:
        >>> float(shot_noise(np.ones((1, 2, 2, 3)), peak=1e9, random_state=0).round(3).max())
        1.0
    """
    x = _check_images(images, "shot_noise")
    if isinstance(peak, bool) or not isinstance(peak, numbers.Real) or not 0 < peak < math.inf:
        raise InputError(f"peak must be a positive finite number of counts, got {peak!r}; the "
                         "paper uses 0.05 * 255 = 12.75")
    rng = _check_random_state(random_state)
    counts = rng.poisson(np.clip(x, 0.0, 1.0) * peak)  # (N, H, W, C)
    return np.clip(counts / peak, 0.0, 1.0).astype(np.float32)


def gaussian_psf(images: np.ndarray, *, sigma: float = _PSF_SIGMA) -> np.ndarray:
    r"""Blur each image and channel with a Gaussian PSF (the MNIST-M "psf" target).

    .. math::

        \tilde x_{n,:,:,c} = \operatorname{clip}(G_\sigma * x_{n,:,:,c},\ 0,\ 1),

    computed with ``scipy.ndimage.gaussian_filter`` (``mode="reflect"``, ``truncate=4``) over
    the two spatial axes only. It is deterministic. Because of the final clip it is meant for
    images in [0, 1].

    Args:
        images: ``(N, H, W, C)`` images in [0, 1].
        sigma: Standard deviation of the PSF in pixels; the paper uses 2.0.

    Returns:
        ``(N, H, W, C)`` float32 blurred images.

    Raises:
        ValueError: On a non-NHWC array or ``sigma <= 0``.

    Example:
        >>> bool(np.allclose(gaussian_psf(np.full((1, 5, 5, 3), 0.5)), 0.5))
        True
    """
    x = _check_images(images, "gaussian_psf")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < math.inf:
        raise InputError(f"sigma must be a positive finite number of pixels, got {sigma!r}; "
                         "the paper uses 2.0")
    blurred = ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect", truncate=4.0)
    return np.clip(blurred, 0.0, 1.0).astype(np.float32)
