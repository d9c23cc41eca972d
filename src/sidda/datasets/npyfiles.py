"""Reading and checking the ``.npy`` files of a data folder, before anything is converted.

- :class:`DataError`: input data that cannot be used, with a message naming the file and fix;
- ``_open_npy``: a memory-mapped array, after checking that the path is a regular file and
  that the ``.npy`` header fits the file (a damaged header never allocates memory);
- ``_check_labels``: 1-D whole numbers in 0..K-1, as int64;
- :func:`scan_images`: min, max, mean and the first non-finite image, chunk by chunk;
- :func:`file_checksum`: the streamed SHA-256 recorded in ``manifest.json``.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sidda.errors import InputError, one_line, short_repr

__all__ = ["DataError", "ImageStats", "file_checksum", "nonfinite_error", "scan_images"]

_CHUNK_BYTES = 64 << 20  # float32 bytes converted or scanned at once
_MAX_LABEL = 2**20  # larger "labels" are not class indices (and would not fit a model)


class DataError(InputError):
    """Input data that cannot be used, with a message naming the file and the fix."""


def _not_a_file(path: Path) -> str | None:
    """What ``path`` is when it is not a readable regular file, or None when it is one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "file not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back to itself)"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a .npy file"
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a character device" if stat.S_ISCHR(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "a special file")
        return f"is {kind}, not a regular .npy file"
    return None


def _check_npy_header(path: Path) -> None:
    """Refuse a .npy header whose shape is negative or larger than the file, before numpy
    maps (or allocates) anything."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # pragma: no cover - numpy refuses other versions in read_magic
                return
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        if zipfile.is_zipfile(path):
            return  # a .npz archive: np.load names it below
        raise DataError(
            f"{path}: not a readable .npy array ({one_line(e, limit=200)}); re-save it with "
            "numpy.save"
        ) from None
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise DataError(
            f"{path}: not a readable .npy array: its header gives the shape "
            f"{short_repr(shape)}, with negative dimensions; the file is damaged, re-save it "
            "with numpy.save"
        )
    need = math.prod(shape) * max(dtype.itemsize, 1)
    have = path.stat().st_size - offset
    if dtype.hasobject:
        return  # np.load refuses pickled data with a clear message
    if need > have:
        raise DataError(
            f"{path}: not a readable .npy array: its header gives the shape "
            f"{short_repr(shape)} ({need} bytes of {dtype}) but the file holds {max(have, 0)} "
            "bytes of data; the file is truncated or damaged, re-save it with numpy.save"
        )


def _open_npy(path: Path) -> np.ndarray:
    problem = _not_a_file(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    _check_npy_header(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, OverflowError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path}: not a readable .npy array ({one_line(e, limit=200)}); re-save it with "
            "numpy.save"
        ) from None
    if not isinstance(arr, np.ndarray):  # a .npz archive (zip) loads as a lazy NpzFile
        arr.close()
        raise DataError(f"{path}: holds a .npz archive, not one array; save one array per file "
                        "with numpy.save")
    return arr


def _check_labels(y: np.ndarray, path: Path, n: int, num_classes: int | None) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{path}: labels must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels for {n} images; the two files must match")
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":  # not bool, complex, datetime, timedelta, str, structured
        raise DataError(f"{path}: labels must be numbers, got dtype {y.dtype}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(
                f"{path}: labels must be whole numbers 0..K-1, found non-integral values"
            )
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels must be in 0..K-1, found {y.min()}")
    if len(y) and y.max() > _MAX_LABEL:
        raise DataError(f"{path}: label {y.max()} is not a class index 0..K-1 (K <= "
                        f"{_MAX_LABEL + 1}); fix the labels")
    y = y.astype(np.int64)
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise DataError(
            f"{path}: label {int(y.max())} is outside 0..{num_classes - 1} "
            f"({num_classes} classes); fix the labels or set data.num_classes"
        )
    return y


def _chunk_rows(x: np.ndarray, chunk_bytes: int) -> int:
    """Rows of ``x`` whose float32 copy fits in ``chunk_bytes`` (at least one)."""
    return max(1, chunk_bytes // max(1, 4 * math.prod(x.shape[1:])))


def nonfinite_error(path: object, index: int) -> DataError:
    """The error for image ``index`` of ``path`` holding NaN or inf pixels."""
    return DataError(
        f"{path}: image {index} has non-finite pixels (NaN or inf, or too large for float32); "
        "fix or drop it"
    )


class ImageStats(NamedTuple):
    """Value range of an image array, from :func:`scan_images`."""

    min: float
    max: float
    mean: float
    first_nonfinite: int | None  # index of the first image with NaN/inf pixels, or None


def scan_images(x: np.ndarray, *, chunk_bytes: int = _CHUNK_BYTES) -> ImageStats:
    """Min, max, mean and the first non-finite image of ``x`` (N, ...), read chunk by chunk.

    Never holds more than about ``chunk_bytes`` of float32 (plus a boolean mask) at once, so a
    memory-mapped file of any size can be scanned. Values are taken as float32, the dtype
    training sees, so float64 values too large for float32 count as non-finite. The scan
    stops at the first non-finite image.

    >>> scan_images(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    ImageStats(min=0.0, max=1.0, mean=0.5, first_nonfinite=1)
    """
    lo, hi, total, count = math.inf, -math.inf, 0.0, 0
    step = _chunk_rows(x, chunk_bytes)
    for i in range(0, len(x), step):
        with np.errstate(over="ignore", invalid="ignore"):
            part = np.asarray(x[i : i + step], dtype=np.float32)
        finite = np.isfinite(part).reshape(len(part), -1).all(1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            part = part[:bad]
            if bad:
                lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
                total, count = total + float(part.sum(dtype=np.float64)), count + part.size
            return ImageStats(lo, hi, total / max(count, 1), i + bad)
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
            total, count = total + float(part.sum(dtype=np.float64)), count + part.size
    return ImageStats(lo, hi, total / max(count, 1), None)


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
