"""FITS cutouts for :func:`~sidda.datasets.import_image_folders` (read with astropy).

A FITS file holds one image: a 2-D array (H, W), one band, or a cube (C, H, W) of C bands
(e.g. the five ugriz or grizy bands of a survey cutout), in the primary HDU or, when that has
no data, the first image extension (compressed images included); leading axes of length 1
are dropped. Values are kept as they are, as float32: no 8-bit scaling, and astropy applies
``BSCALE``/``BZERO``. NaN pixels (masked or off the survey footprint) become 0 and are counted;
infinite pixels are an error. astropy is imported only when a FITS file is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sidda.datasets.npyfiles import DataError

__all__ = ["FITS_EXTENSIONS", "fits_bands", "is_fits", "read_fits"]

#: File name endings read as FITS (case-insensitive).
FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


def is_fits(path: Path) -> bool:
    """Whether ``path`` is named like a FITS file.

    >>> is_fits(Path("cutout_042.FITS.gz")), is_fits(Path("cutout.png"))
    (True, False)
    """
    return path.name.lower().endswith(FITS_EXTENSIONS)


def _fits_module() -> Any:
    try:
        from astropy.io import fits
    except ImportError as e:  # pragma: no cover - astropy is a dependency
        raise ImportError("reading FITS files needs astropy: pip install astropy") from e
    return fits


def _open_errors(fits: Any) -> tuple[type[BaseException], ...]:
    return (OSError, ValueError, TypeError, EOFError, KeyError, IndexError, fits.VerifyError)


def _image_hdu(hdul: Any, path: Path) -> tuple[Any, tuple[int, ...]]:
    """The first HDU with image data and its shape, leading length-1 axes dropped."""
    for hdu in hdul:
        if hdu.is_image and len(hdu.shape) >= 2:
            shape = tuple(hdu.shape)
            while len(shape) > 3 and shape[0] == 1:
                shape = shape[1:]
            if len(shape) > 3:
                raise DataError(
                    f"{path}: image data of shape {tuple(hdu.shape)}; a FITS cutout must be "
                    "2-D (H, W) or a cube of bands (C, H, W)"
                )
            return hdu, shape
    kinds = ", ".join(type(h).__name__ for h in hdul)
    raise DataError(
        f"{path}: no image data in the primary HDU or any image extension (HDUs: {kinds}); "
        "save each cutout as a 2-D (H, W) or 3-D (C, H, W) image"
    )


def fits_bands(path: Path) -> tuple[int, tuple[int, int]]:
    """(bands C, (width, height)) of a FITS cutout, from its headers (no pixels decoded)."""
    fits = _fits_module()
    try:
        with fits.open(path, memmap=False) as hdul:
            _, shape = _image_hdu(hdul, path)
    except DataError:
        raise
    except _open_errors(fits) as e:
        raise DataError(f"{path}: astropy cannot read this FITS file ({e}); fix or remove "
                        "the file") from None
    bands = 1 if len(shape) == 2 else shape[0]
    return bands, (shape[-1], shape[-2])


def read_fits(path: Path) -> tuple[np.ndarray, int]:
    """A FITS cutout as (H, W, C) float32, and how many NaN pixels were set to 0."""
    fits = _fits_module()
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu, shape = _image_hdu(hdul, path)
            with np.errstate(over="ignore"):  # beyond float32 -> inf, refused below
                data = np.array(hdu.data, dtype=np.float32).reshape(shape)  # native order
    except DataError:
        raise
    except _open_errors(fits) as e:
        raise DataError(f"{path}: astropy cannot read this FITS file ({e}); fix or remove "
                        "the file") from None
    if data.ndim == 2:
        data = data[None]  # (1, H, W)
    nan = np.isnan(data)
    n_nan = int(nan.sum())
    data[nan] = 0.0
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: image has infinite pixels (or values too large for float32); "
                        "fix or remove it")
    return np.ascontiguousarray(np.moveaxis(data, 0, -1)), n_nan  # (H, W, C)
