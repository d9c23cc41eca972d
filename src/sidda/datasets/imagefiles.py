"""One image file as the models see it: :func:`read_image_file`, and the files of a folder.

``sidda data import-folder`` and ``sidda predict`` read files with these functions, so an
image given to ``predict`` as its original file gets the pixels its imported copy has.

Pixel values (PNG, JPEG, BMP, GIF, TIFF, WebP, read with Pillow) become float32:

=====================================  =====================================================
Pillow mode                            value
=====================================  =====================================================
8-bit (``L``, ``RGB``, palette, ...)   ``v / 255``
16-bit (``I;16``, ``I;16B`` ...)       ``v / 65535``
32-bit integer (``I``)                 ``v / 65535`` when every value lies in 0..65535 (16-bit
                                       data, as older Pillow versions load 16-bit PNGs);
                                       otherwise refused: save them as 32-bit float
                                       TIFF or scale them to 16 bits
32-bit float (``F``)                   ``v``, kept (no clipping)
=====================================  =====================================================

PNG/JPEG-style files give 1 (grey, the luminance of a colour image) or 3 (RGB, a grey image
repeated) channels; a model with another band count needs FITS cutouts
(:mod:`sidda.datasets.fits`) or ``.npy`` arrays. Each image is cropped to its central square
(``fit="crop"``) or stretched whole (``fit="stretch"``), then resized to S x S, band by band,
with bicubic interpolation (the PIL default the paper's notebooks use); values in [0, 1] are
clipped back to [0, 1] after the bicubic overshoot.

:func:`list_image_files` lists a folder recursively, in sorted order, skipping hidden files and
hidden folders; class folders are read the same way.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sidda.datasets.fits import FITS_EXTENSIONS, check_hdus, is_fits, read_fits
from sidda.datasets.npyfiles import DataError
from sidda.errors import InputError

__all__ = ["ALL_EXTENSIONS", "IMAGE_EXTENSIONS", "ImportSettings", "image_header",
           "image_pixels", "import_settings", "list_image_files", "nfc", "read_image_file"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_UINT16_MAX = 65535


def is_image_name(path: Path) -> bool:
    """Whether ``path`` is named like an image file sidda reads (image or FITS).

    >>> [is_image_name(Path(n)) for n in ("a/B.PNG", "c.fits.gz", "d.txt")]
    [True, True, False]
    """
    return path.suffix.lower() in IMAGE_EXTENSIONS or is_fits(path)


def list_image_files(folder: str | Path) -> list[Path]:
    """The image and FITS files under ``folder``, recursively, sorted by relative path.

    Hidden files and folders (names starting with ``.``) are skipped, and symbolic links to
    folders are not followed (no loops); links to files are read.
    """
    folder = Path(folder)
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            p = Path(top) / name
            if not name.startswith(".") and is_image_name(p) and p.is_file():
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def nfc(name: str) -> str:
    """A name in Unicode NFC, the form class folder names are compared and stored in.

    >>> nfc("cafe\\u0301") == "caf\\u00e9"
    True
    """
    return unicodedata.normalize("NFC", name)


class ImportSettings(NamedTuple):
    """How ``sidda data import-folder`` read the image files of a data folder."""

    image_size: int | None  # S, or None (not an import: read at the model's size)
    fit: str  # "crop" or "stretch"
    hdus: tuple[str | int, ...] | None  # FITS HDUs stacked as bands, or None (first image)


def import_settings(manifest: Mapping) -> ImportSettings:
    """The reading options a folder's ``manifest.json`` (or a run's ``data_manifest.json``)
    records, to read new image files as its images were read.

    >>> import_settings({"generator": "image-folder", "image_size": 32, "fit": "stretch",
    ...                  "fits_hdus": ["G", "R"]})
    ImportSettings(image_size=32, fit='stretch', hdus=('G', 'R'))
    >>> import_settings({"generator": "shapes"})
    ImportSettings(image_size=None, fit='crop', hdus=None)

    Raises:
        DataError: a manifest of an import whose recorded options are invalid.
    """
    if not isinstance(manifest, Mapping) or manifest.get("generator") != "image-folder":
        return ImportSettings(None, "crop", None)
    size, fit, hdus = (manifest.get(k) for k in ("image_size", "fit", "fits_hdus"))
    try:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 1):
            raise InputError(f"image_size {size!r} is not a positive integer")
        if fit not in (None, "crop", "stretch"):
            raise InputError(f"fit {fit!r} is neither 'crop' nor 'stretch'")
        return ImportSettings(size, fit or "crop", check_hdus(hdus))
    except InputError as e:
        raise DataError(f"manifest.json of an import: {e}; re-import the folder") from None


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({e}); fix or remove the file") from None


def _scaled(path: Path, im: object, channels: int) -> np.ndarray:
    """Pixels of an open Pillow image as float32 (H, W) or (H, W, 3) by the module's table."""
    mode = im.mode  # type: ignore[attr-defined]
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / _UINT16_MAX
    if mode == "I" or mode.startswith("I;32"):
        raw = np.asarray(im)
        lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        if lo < 0 or hi > _UINT16_MAX:
            raise DataError(
                f"{path}: 32-bit integer pixels from {lo} to {hi}, outside the 0..65535 that "
                "sidda scales to [0, 1]; save the images as 32-bit float TIFF (values kept) or "
                "scale them to 16 bits"
            )
        return raw.astype(np.float32) / _UINT16_MAX
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    return np.asarray(im.convert("L" if channels == 1 else "RGB"),  # type: ignore[attr-defined]
                      dtype=np.float32) / 255.0


def image_pixels(path: Path, *, channels: int, size: int, fit: str) -> np.ndarray:
    """One PNG/JPEG/... image file -> (size, size, channels) float32."""
    from PIL import Image

    if channels not in (1, 3):
        raise DataError(f"{path}: PNG/JPEG give 1 or 3 channels; the model takes {channels} "
                        "bands: give it FITS cutouts or .npy arrays with those bands")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = _scaled(path, im, channels)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: unreadable image ({e}); fix or remove the file") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W, 1)
    if arr.shape[2] != channels:
        arr = np.repeat(arr, channels, axis=2)  # grey -> RGB
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: image has non-finite pixels (NaN or inf); fix or remove it")
    return fit_square(arr, size=size, fit=fit, clip=mode != "F")


def fit_square(arr: np.ndarray, *, size: int, fit: str, clip: bool) -> np.ndarray:
    """(H, W, C) -> (size, size, C) float32: central square or stretched, bicubic per band."""
    from PIL import Image

    channels = arr.shape[2]
    h, w = arr.shape[:2]
    if fit == "crop" and h != w:
        side = min(h, w)
        r0, c0 = (h - side) // 2, (w - side) // 2
        arr = arr[r0 : r0 + side, c0 : c0 + side]
    if arr.shape[:2] != (size, size):
        arr = np.stack([
            np.asarray(Image.fromarray(np.ascontiguousarray(arr[:, :, c]), mode="F").resize(
                (size, size), Image.Resampling.BICUBIC))
            for c in range(channels)
        ], axis=2)  # (S, S, C)
    if clip:
        arr = np.clip(arr, 0.0, 1.0)  # bicubic overshoot of images in [0, 1]
    return arr.astype(np.float32, copy=False)


def read_image_file(
    path: str | Path, *, channels: int, size: int, fit: str = "crop",
    hdus: Sequence[str | int] | None = None,
) -> np.ndarray:
    """One image file read as :func:`~sidda.datasets.import_image_folders` reads it.

    PNG/JPEG/... files are scaled by the module's table and given ``channels`` (1: grey, 3:
    RGB; other counts are refused). FITS cutouts keep their values and bands (NaN pixels
    become 0) and must have ``channels`` bands; ``hdus`` names the HDUs stacked as bands, as
    ``--bands``/``--hdu`` of the import (:func:`import_settings` reads the recorded choice).
    Both are cropped to their central square (``fit="crop"``) or stretched, then resized.

    Returns:
        (size, size, C) float32.

    Raises:
        DataError: the file cannot be read, or does not give ``channels`` bands.
    """
    path = Path(path)
    if fit not in ("crop", "stretch"):
        raise InputError(f"fit must be 'crop' or 'stretch', got {fit!r}")
    if not is_fits(path):
        return image_pixels(path, channels=channels, size=size, fit=fit)
    pixels, _ = read_fits(path, hdus=hdus)
    if pixels.shape[2] != channels:
        raise DataError(f"{path}: {pixels.shape[2]} band(s), but the model takes {channels}; "
                        "give it cutouts with the bands it was trained on")
    return fit_square(pixels, size=size, fit=fit, clip=False)


#: Every file name ending sidda reads as an image, for messages.
ALL_EXTENSIONS = ", ".join(IMAGE_EXTENSIONS + FITS_EXTENSIONS)
