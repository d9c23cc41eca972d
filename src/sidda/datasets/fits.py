"""FITS cutouts for :func:`~sidda.datasets.import_image_folders` (read with astropy).

A FITS file holds one image, read in one of two ways:

- by default, the first HDU with image data (the primary HDU or, when that has no data, the
  first image extension; compressed images included): a 2-D array (H, W), one band, or a cube
  (C, H, W) of C bands (e.g. the five ugriz bands of a survey cutout); leading axes of length
  1 are dropped. Other image HDUs of the file are left out, with a warning
  (:func:`fits_bands` reports them);
- with ``hdus`` (``--bands G,R,Z`` or ``--hdu 1,2,3``), the named HDUs, one band each, stacked
  in the order given: band c is HDU ``hdus[c]``, matched by ``EXTNAME`` (case-insensitive) for
  a name and by position (0 is the primary HDU) for a number. Survey cutout services write
  the g, r, z images of one object this way. Every named HDU must hold a 2-D image, and all of
  the same shape.

Values are kept as they are, as float32: no 8-bit scaling, and astropy applies
``BSCALE``/``BZERO``. NaN pixels (masked or off the survey footprint) become 0 and are counted;
infinite pixels are an error. A cube stored (H, W, C), bands last, is refused (its last axis
is shorter than 8 pixels while the other two are not): FITS cutouts keep the bands first.
astropy's warnings about a damaged file are caught while reading; the error names the file in
one line. astropy is imported only when a FITS file is read.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sidda.datasets.npyfiles import DataError
from sidda.errors import InputError, short_repr

__all__ = ["FITS_EXTENSIONS", "FitsHeader", "check_hdus", "fits_bands", "is_fits", "read_fits"]

logger = logging.getLogger(__name__)

#: File name endings read as FITS (case-insensitive).
FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
_MIN_SIDE = 8  # the smallest image side the models take


class FitsHeader(NamedTuple):
    """What :func:`fits_bands` reads from the headers of one file."""

    bands: int  # C
    size: tuple[int, int]  # (width, height)
    left_out: tuple[str, ...]  # image HDUs with data that are not read, e.g. ('1 R', '2 Z')


def is_fits(path: Path) -> bool:
    """Whether ``path`` is named like a FITS file.

    >>> is_fits(Path("cutout_042.FITS.gz")), is_fits(Path("cutout.png"))
    (True, False)
    """
    return path.name.lower().endswith(FITS_EXTENSIONS)


def check_hdus(hdus: Sequence[str | int] | None) -> tuple[str | int, ...] | None:
    """A checked HDU selection: names upper-cased (EXTNAME is case-insensitive), or indices.

    >>> check_hdus(["g", "r", "z"]), check_hdus((1, 2)), check_hdus(None)
    (('G', 'R', 'Z'), (1, 2), None)

    Raises:
        InputError: an empty selection, an empty name, a negative index, a repeated HDU, or
            names mixed with indices.
    """
    if hdus is None:
        return None
    if isinstance(hdus, str | bytes) or not isinstance(hdus, Sequence) or not hdus:
        raise InputError(f"FITS bands must be a list of HDU names or indices, e.g. G,R,Z or "
                         f"1,2,3; got {short_repr(hdus)}")
    out: list[str | int] = []
    for h in hdus:
        if isinstance(h, str) and h.strip():
            out.append(h.strip().upper())
        elif isinstance(h, int) and not isinstance(h, bool) and h >= 0:
            out.append(h)
        else:
            raise InputError(f"FITS bands: {short_repr(h)} is neither an HDU name (EXTNAME, e.g. "
                             "G) nor an HDU index >= 0 (0 is the primary HDU)")
    if len({type(h) for h in out}) > 1:
        raise InputError(f"FITS bands mix names and indices ({short_repr(list(hdus))}); give "
                         "EXTNAMEs (--bands G,R,Z) or indices (--hdu 1,2,3)")
    if len(set(out)) != len(out):
        raise InputError(f"FITS bands name an HDU twice ({short_repr(list(hdus))}); each band is "
                         "one HDU")
    return tuple(out)


def _fits_module() -> Any:
    try:
        from astropy.io import fits
    except ImportError as e:  # pragma: no cover - astropy is a dependency
        raise ImportError("reading FITS files needs astropy: pip install astropy") from e
    return fits


def _open_errors(fits: Any) -> tuple[type[BaseException], ...]:
    return (OSError, ValueError, TypeError, EOFError, KeyError, IndexError, fits.VerifyError)


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without leading axes of length 1 beyond the last three."""
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _label(i: int, hdu: Any) -> str:
    return f"{i} {hdu.name or '(no name)'}"


def _describe(hdul: Any) -> str:
    """Every HDU of a file, e.g. ``0 PRIMARY (no data), 1 G (image 64x64), 2 CAT (table)``."""
    parts = []
    for i, hdu in enumerate(hdul):
        if not hdu.is_image:
            what = "table"
        elif not hdu.shape:
            what = "no data"
        else:
            what = "image " + "x".join(map(str, hdu.shape[::-1]))
        parts.append(f"{_label(i, hdu)} ({what})")
    return ", ".join(parts)


def _check_layout(shape: tuple[int, ...], path: Path, where: str) -> None:
    if len(shape) > 3:
        raise DataError(f"{path}: image data{where} of shape {shape}; a FITS cutout must be 2-D "
                        "(H, W) or a cube of bands (C, H, W)")
    if len(shape) == 3 and shape[2] < _MIN_SIDE <= min(shape[:2]):
        raise DataError(
            f"{path}: a cube{where} of shape {shape} looks stored as (H, W, C), bands last; sidda "
            "reads FITS cubes as (C, H, W), bands first, as survey cutouts store them: rewrite it "
            "with the bands first (numpy.moveaxis(data, -1, 0))"
        )


def _first_image(hdul: Any, path: Path) -> tuple[Any, tuple[int, ...], tuple[str, ...]]:
    """The first HDU with image data, its shape, and the image HDUs left out."""
    found = [(i, h) for i, h in enumerate(hdul) if h.is_image and len(h.shape) >= 2]
    if not found:
        kinds = ", ".join(type(h).__name__ for h in hdul)
        raise DataError(
            f"{path}: no image data in the primary HDU or any image extension (HDUs: {kinds}); "
            "save each cutout as a 2-D (H, W) or 3-D (C, H, W) image"
        )
    (_, hdu), rest = found[0], found[1:]
    shape = _squeeze(tuple(hdu.shape))
    _check_layout(shape, path, "")
    return hdu, shape, tuple(_label(i, h) for i, h in rest)


def _selected(hdul: Any, path: Path, hdus: tuple[str | int, ...]) -> tuple[list[Any], int, int]:
    """The HDUs ``hdus`` names, in order, and their common (H, W)."""
    chosen = []
    for h in hdus:
        if isinstance(h, int):
            hdu = hdul[h] if h < len(hdul) else None
        else:
            hdu = next((x for x in hdul if (x.name or "").upper() == h), None)
        if hdu is None:
            raise DataError(f"{path}: no HDU {'index ' if isinstance(h, int) else ''}{h}; the "
                            f"file has {_describe(hdul)}")
        shape = _squeeze(tuple(hdu.shape)) if hdu.is_image else ()
        while len(shape) > 2 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2:
            what = "a table" if not hdu.is_image else f"data of shape {tuple(hdu.shape)}"
            raise DataError(f"{path}: HDU {h} holds {what}; each band named must be a 2-D "
                            f"image (the file has {_describe(hdul)})")
        chosen.append((h, hdu, shape))
    shapes = {s for _, _, s in chosen}
    if len(shapes) > 1:
        raise DataError(f"{path}: the bands differ in shape ("
                        + ", ".join(f"HDU {h} {s[1]}x{s[0]}" for h, _, s in chosen)
                        + "); the HDUs stacked as bands need one size")
    (height, width), = shapes
    return [hdu for _, hdu, _ in chosen], height, width


def _read(path: Path, action: Any) -> Any:
    """Run ``action(hdul)`` on the open file; astropy's warnings caught, errors one line."""
    fits = _fits_module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                return action(hdul)
        except DataError:
            raise
        except _open_errors(fits) as e:
            raise DataError(f"{path}: astropy cannot read this FITS file ({e}); fix or remove "
                            "the file") from None
        finally:
            for w in caught[:3]:
                logger.debug("%s: %s", path, w.message)


def fits_bands(path: Path, *, hdus: Sequence[str | int] | None = None) -> FitsHeader:
    """(bands C, (width, height), image HDUs left out) of a FITS cutout, from its headers.

    No pixels are decoded. ``hdus`` selects the HDUs stacked as bands (module docstring).
    """
    sel = check_hdus(hdus)

    def action(hdul: Any) -> FitsHeader:
        if sel is not None:
            _, height, width = _selected(hdul, path, sel)
            return FitsHeader(len(sel), (width, height), ())
        _, shape, rest = _first_image(hdul, path)
        return FitsHeader(1 if len(shape) == 2 else shape[0], (shape[-1], shape[-2]), rest)

    return _read(path, action)


def read_fits(path: Path, *, hdus: Sequence[str | int] | None = None) -> tuple[np.ndarray, int]:
    """A FITS cutout as (H, W, C) float32, and how many NaN pixels were set to 0.

    ``hdus`` selects the HDUs stacked as bands (module docstring); None reads the first image.
    """
    sel = check_hdus(hdus)

    def action(hdul: Any) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond float32 -> inf, refused below
            if sel is not None:
                chosen, height, width = _selected(hdul, path, sel)
                return np.stack([np.array(h.data, dtype=np.float32).reshape(height, width)
                                 for h in chosen])  # (C, H, W)
            hdu, shape, _ = _first_image(hdul, path)
            return np.array(hdu.data, dtype=np.float32).reshape(shape)  # native order

    data = _read(path, action)
    if data.ndim == 2:
        data = data[None]  # (1, H, W)
    nan = np.isnan(data)
    n_nan = int(nan.sum())
    data[nan] = 0.0
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: image has infinite pixels (or values too large for float32); "
                        "fix or remove it")
    return np.ascontiguousarray(np.moveaxis(data, 0, -1)), n_nan  # (H, W, C)
