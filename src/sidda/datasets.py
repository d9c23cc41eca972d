"""Image sets on disk and in memory, and the batches that training reads from them.

Two on-disk layouts (the authors' Zenodo record 15215272; see docs/data.md, "Layouts"),
picked by ``DataConfig.layout``::

    layout "zenodo" (shapes, astro, MNIST-M, Galaxy Zoo Evo with suffixes _sdss/_desi)
    DIR/train/x_train{S}.npy  y_train{S}.npy               source (suffix S, usually none)
    DIR/train/x_train{T}.npy  [y_train{T}.npy]             target (suffix T; labels optional)
    DIR/test/x_test{S}.npy  y_test{S}.npy  x_test{T}.npy  [y_test{T}.npy]

    layout "mrssc2" (flat)
    DIR/source_X_train.npy  source_y_train.npy  target_X_train.npy  [target_y_train.npy]
    DIR/source_X_test.npy   source_y_test.npy   target_X_test.npy   [target_y_test.npy]

    DIR/manifest.json     how the data was made: generator, parameters, seed, counts, checksums

Images are NHWC or NHW (one channel), float or integer; labels are 1-D integers or integral
floats in 0..K-1. Arrays are opened memory-mapped. A file whose float32 NCHW tensor fits in
``DataConfig.memory_budget_mb`` is converted once, chunk by chunk, into memory; a larger one
(Galaxy Zoo Evo's 7.7 GB float64 files) stays memory-mapped as :class:`MappedImages` and is
converted per batch. Both give the same numbers: normalised as the paper does
(``x -> (x - 0.5) / 0.5``) and resized to ``image_size`` (bilinear, antialiased). Target labels
are never needed for training; evaluation uses them when present.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from sidda.errors import InputError, one_line, short_repr
from sidda.runs import atomic_write

__all__ = [
    "MAX_IMAGE_SIZE",
    "LAYOUTS",
    "DataConfig",
    "DataError",
    "DomainData",
    "ImageSet",
    "ImageStats",
    "MappedImages",
    "batches",
    "cycle_batches",
    "detect_layout",
    "file_checksum",
    "layout_paths",
    "load_domains",
    "load_split",
    "scan_images",
    "split_indices",
    "write_layout",
    "write_manifest",
    "zenodo_suffixes",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("zenodo", "mrssc2")
_CHUNK_BYTES = 64 << 20  # float32 bytes converted or scanned at once
#: Largest image side the models take (a bigger one would allocate tens of GB at once).
MAX_IMAGE_SIZE = 1024
_MAX_LABEL = 2**20  # larger "labels" are not class indices (and would not fit a model)


class DataError(InputError):
    """Input data that cannot be used, with a message naming the file and the fix."""


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is read.

    Attributes:
        path: Folder in one of the layouts of the module docstring.
        layout: ``"zenodo"`` (``train/``, ``test/`` with file suffixes) or ``"mrssc2"`` (flat
            ``source_X_train.npy`` ... files; the suffixes are ignored).
        target_suffix: Suffix of the target domain files (``_noise``, ``_PSF``, ``_desi``).
        source_suffix: Suffix of the source files (empty for the paper's sets, ``_sdss`` for GZ).
        val_fraction: Fraction of each domain's training set held out for validation.
        image_size: Resize images to this size (bilinear, 8 to :data:`MAX_IMAGE_SIZE`), or None
            to keep them.
        normalize: ``"half"`` maps x to (x - 0.5)/0.5 as the paper; ``"none"`` keeps x.
        num_classes: Number of classes, or None to infer it (1 + the largest label of all label
            files); set it when classes in 0..K-1 have no image in any split.
        memory_budget_mb: Largest float32 image tensor, in MB, that one file may occupy in
            memory. A file that would convert to more stays memory-mapped and is converted per
            batch (slower: each batch is read from disk, or the page cache, and resized again).
            0 keeps every file memory-mapped.
    """

    path: str = "data/shapes"
    layout: str = "zenodo"
    target_suffix: str = "_noise"
    source_suffix: str = ""
    val_fraction: float = 0.2
    image_size: int | None = None
    normalize: str = "half"
    num_classes: int | None = None
    memory_budget_mb: int = 2048

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"data.layout must be one of {LAYOUTS}, got {self.layout!r}; 'zenodo' has "
                "train/ and test/ folders, 'mrssc2' flat source_X_train.npy ... files"
            )
        if not 0 <= self.val_fraction < 1:
            raise ValueError(
                f"data.val_fraction must lie in [0, 1), got {self.val_fraction}; the paper uses 0.2"
            )
        if self.normalize not in ("half", "none"):
            raise ValueError(f"data.normalize must be 'half' or 'none', got {self.normalize!r}")
        if self.image_size is not None and not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"data.image_size must lie in 8..{MAX_IMAGE_SIZE} or be null, got "
                f"{self.image_size}"
            )
        if self.memory_budget_mb < 0:
            raise ValueError(
                f"data.memory_budget_mb must be >= 0 (0: always memory-map), got "
                f"{self.memory_budget_mb}; the default is 2048"
            )
        if self.layout == "zenodo" and self.source_suffix == self.target_suffix:
            raise ValueError(
                f"data.source_suffix and data.target_suffix are both {self.source_suffix!r}; "
                "the target files need their own suffix, e.g. '_noise'"
            )


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


def _as_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    """NHW, NHWC or NCHW images -> an NCHW view.

    With 4-D images whose first and last axes could both hold the channels (both <= 4), the
    reading with square images wins, and NHWC (the documented layout) when both are square.
    """
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        nhwc, nchw = x.shape[-1] <= 4, x.shape[1] <= 4
        if nhwc and nchw:
            nchw = x.shape[2] == x.shape[3] and x.shape[1] != x.shape[2]
            nhwc = not nchw
        if nhwc:
            return np.moveaxis(x, -1, 1)
        if nchw:
            return x
        raise DataError(
            f"{path}: cannot tell the channel axis of images of shape {x.shape}; "
            "store them as NHWC (N, H, W, C) with C <= 4"
        )
    raise DataError(
        f"{path}: images must be NHW or NHWC (3-D or 4-D), got {x.ndim}-D shape {x.shape}"
    )


def _convert_block(
    part: np.ndarray, *, normalize: str, size: tuple[int, int] | None
) -> Tensor:
    """NCHW rows of any numeric dtype -> float32 tensor (B, C, H', W'), normalised and resized.

    The one conversion of both the in-memory and the memory-mapped path.
    """
    with np.errstate(over="ignore"):  # float64 beyond float32 -> inf, reported by the caller
        t = torch.from_numpy(np.array(part, dtype=np.float32, order="C"))  # (B, C, H, W), copy
    if normalize == "half":
        t = (t - 0.5) / 0.5
    if size is not None and tuple(t.shape[2:]) != size:
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return t


def _chunk_rows(x: np.ndarray, chunk_bytes: int) -> int:
    """Rows of ``x`` whose float32 copy fits in ``chunk_bytes`` (at least one)."""
    return max(1, chunk_bytes // max(1, 4 * math.prod(x.shape[1:])))


def _nonfinite_error(path: object, index: int) -> DataError:
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


def _as_index(idx: object, n: int) -> np.ndarray | slice:
    """An index tensor, array, list or slice -> something NumPy can index ``n`` rows with."""
    if isinstance(idx, slice):
        return idx
    if torch.is_tensor(idx):
        idx = idx.detach().cpu().numpy()
    arr = np.asarray(idx)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(
            f"index images with a 1-D integer tensor, an int or a slice, got {arr.dtype} "
            f"with shape {arr.shape}"
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.max() >= n or arr.min() < -n):
        raise IndexError(f"index {int(arr.max())} is out of range for {n} images")
    return arr


class MappedImages:
    """Images kept memory-mapped on disk and converted per batch.

    Stands in for the float32 ``(N, C, H, W)`` tensor of the in-memory path: ``len``,
    ``shape``, ``dtype``, and indexing with an int, a slice or a 1-D int64 index tensor.
    A batch reads its rows once each, in ascending file order (sequential disk access), converts
    them exactly like the in-memory path, and returns them in the order asked for::

        x[idx]  # idx (B,) int64 -> (B, C, H', W') float32, x[idx][i] is image idx[i]

    :meth:`subset` only remaps indices; the file is never read whole.

    Attributes:
        array: NCHW view of the memory-mapped file (``np.memmap``).
        rows: The file rows this set holds, in order (N,).
        normalize: ``"half"`` or ``"none"``, as :class:`DataConfig`.
        image_size: Output side, or None to keep the file's size.
    """

    dtype = torch.float32

    def __init__(
        self,
        array: np.ndarray,
        *,
        normalize: str = "half",
        image_size: int | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        self.array = array
        self.rows = np.arange(len(array)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.normalize = normalize
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        """(N, C, H', W') of the converted images."""
        _, c, h, w = self.array.shape
        size = (self.image_size, self.image_size) if self.image_size else (h, w)
        return torch.Size((len(self.rows), c, *size))

    def __getitem__(self, idx: int | slice | Tensor | np.ndarray) -> Tensor:
        if isinstance(idx, (int, np.integer)):
            return self[np.array([idx])][0]
        rows = self.rows[_as_index(idx, len(self))]  # (B,) file rows, any order
        uniq, inverse = np.unique(rows, return_inverse=True)  # ascending, each row once
        size = (self.image_size, self.image_size) if self.image_size else None
        block = _convert_block(self.array[uniq], normalize=self.normalize, size=size)
        if len(uniq) == len(rows) and np.array_equal(uniq, rows):
            return block
        return block[torch.from_numpy(inverse.reshape(-1))]

    def subset(self, idx: Tensor | np.ndarray | slice) -> MappedImages:
        """The images at ``idx``, still memory-mapped (no pixels are read)."""
        return MappedImages(self.array, normalize=self.normalize, image_size=self.image_size,
                            rows=self.rows[_as_index(idx, len(self))])

    def __repr__(self) -> str:
        name = getattr(self.array, "filename", None) or "array"
        return f"MappedImages({Path(str(name)).name}, shape={tuple(self.shape)})"


@dataclass
class ImageSet:
    """Images (N, C, H, W) float32, normalised, with optional int64 labels (N,).

    Attributes:
        x: Images: a float32 tensor (N, C, H, W), or :class:`MappedImages` (same interface:
            ``len``, ``.shape``, ``x[idx]``) for a file above the memory budget.
        y: Labels (N,) int64, or None (unlabelled domain).
        name: A short description for messages (the file it came from).
    """

    x: Tensor | MappedImages
    y: Tensor | None
    name: str = ""

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    @property
    def memory_mapped(self) -> bool:
        """Whether the images stay on disk and are converted per batch."""
        return isinstance(self.x, MappedImages)

    def subset(self, idx: Tensor) -> ImageSet:
        """The images (and labels) at ``idx``; a memory-mapped set stays memory-mapped."""
        x = self.x.subset(idx) if isinstance(self.x, MappedImages) else self.x[idx]
        return ImageSet(x, None if self.y is None else self.y[idx], self.name)


def _convert(x: np.ndarray, *, normalize: str, image_size: int | None, name: object) -> Tensor:
    """NCHW array (memory-mapped or not) -> float32 tensor in memory, chunk by chunk."""
    n, c, h, w = x.shape
    size = (image_size, image_size) if image_size else (h, w)
    out = torch.empty((n, c, *size), dtype=torch.float32)
    step = _chunk_rows(x, _CHUNK_BYTES)
    for i in range(0, n, step):
        part = _convert_block(x[i : i + step], normalize=normalize, size=size)
        finite = torch.isfinite(part).flatten(1).all(1)
        if not finite.all():
            raise _nonfinite_error(name, i + int((~finite).nonzero()[0]))
        out[i : i + len(part)] = part
    return out


def load_split(
    images: str | Path,
    labels: str | Path | None,
    *,
    normalize: str = "half",
    image_size: int | None = None,
    num_classes: int | None = None,
    require_labels: bool = True,
    memory_budget_mb: int = 2048,
) -> ImageSet:
    """Load one image file and its label file into an :class:`ImageSet`.

    Images whose float32 tensor would exceed ``memory_budget_mb`` stay memory-mapped
    (:class:`MappedImages`); they are scanned for non-finite pixels chunk by chunk here.

    Raises:
        DataError: missing or unreadable file, wrong rank or channel count, images too small or
            not square, non-finite pixels, label problems; the message names the file.
    """
    images = Path(images)
    x = _open_npy(images)
    if x.ndim not in (3, 4):
        raise DataError(
            f"{images}: images must be NHW or NHWC (3-D or 4-D), got {x.ndim}-D shape {x.shape}"
        )
    if len(x) == 0:
        raise DataError(f"{images}: holds no images (empty domain)")
    if x.dtype.kind not in "iuf":  # not bool, complex, datetime, timedelta, str, structured
        raise DataError(f"{images}: images must be numeric, got dtype {x.dtype}")
    x = _as_nchw(x, images)
    if x.shape[1] < 1:
        raise DataError(f"{images}: images have no channels (shape {x.shape}); store them as "
                        "NHW or NHWC with C >= 1")
    if min(x.shape[2:]) < 8:
        fix = ("data.image_size only resizes images of at least 8x8; make them larger" if
               image_size else "resize them (data.image_size resizes images of at least 8x8)")
        raise DataError(
            f"{images}: images of {x.shape[2]}x{x.shape[3]} pixels ({x.shape[1]} channel(s)) "
            f"are too small for the models (at least 8x8); {fix}"
        )
    if max(x.shape[2:]) > MAX_IMAGE_SIZE and image_size is None:
        raise DataError(
            f"{images}: images of {x.shape[2]}x{x.shape[3]} pixels are larger than the models "
            f"take (at most {MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}); set data.image_size to resize "
            "them"
        )
    if x.shape[2] != x.shape[3] and image_size is None:
        raise DataError(
            f"{images}: images must be square, got {x.shape[2]}x{x.shape[3]}; set data.image_size"
        )
    n, c, h, w = x.shape
    out_bytes = 4 * n * c * (image_size or h) * (image_size or w)
    t: Tensor | MappedImages
    if out_bytes > memory_budget_mb * 2**20:
        chunk = min(_CHUNK_BYTES, max(memory_budget_mb * 2**20, 2**20) // 8)
        stats = scan_images(x, chunk_bytes=chunk)
        if stats.first_nonfinite is not None:
            raise _nonfinite_error(images, stats.first_nonfinite)
        t = MappedImages(x, normalize=normalize, image_size=image_size)
        logger.info("%s: %.0f MB as float32 exceeds data.memory_budget_mb=%d; kept "
                    "memory-mapped and converted per batch", images, out_bytes / 2**20,
                    memory_budget_mb)
    else:
        t = _convert(x, normalize=normalize, image_size=image_size, name=images)
    y = None
    if labels is not None and os.path.lexists(labels):
        y = torch.from_numpy(_check_labels(_open_npy(Path(labels)), Path(labels), n,
                                           num_classes))
    elif require_labels:
        raise DataError(f"{labels}: label file not found (labels are required for this domain)")
    return ImageSet(t, y, str(images))


@dataclass
class DomainData:
    """Source and target, train and test, as loaded from a data folder."""

    train_s: ImageSet
    train_t: ImageSet
    test_s: ImageSet | None
    test_t: ImageSet | None
    num_classes: int
    manifest: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return self.train_s.shape[0]

    @property
    def image_size(self) -> int:
        return self.train_s.shape[1]


def layout_paths(
    root: str | Path, *, layout: str = "zenodo", source_suffix: str = "",
    target_suffix: str = "_noise",
) -> dict[str, tuple[Path, Path]]:
    """Image and label file of ``train_s``, ``train_t``, ``test_s`` and ``test_t``.

    >>> layout_paths("d", layout="mrssc2")["train_t"]
    (PosixPath('d/target_X_train.npy'), PosixPath('d/target_y_train.npy'))
    """
    root = Path(root)
    out = {}
    for split in ("train", "test"):
        for dom, suffix, name in (("s", source_suffix, "source"), ("t", target_suffix, "target")):
            if layout == "mrssc2":
                out[f"{split}_{dom}"] = (root / f"{name}_X_{split}.npy",
                                         root / f"{name}_y_{split}.npy")
            else:
                out[f"{split}_{dom}"] = (root / split / f"x_{split}{suffix}.npy",
                                         root / split / f"y_{split}{suffix}.npy")
    return out


def detect_layout(root: str | Path) -> str | None:
    """``"mrssc2"`` or ``"zenodo"`` from the files in ``root``, or None if neither."""
    root = Path(root)
    if (root / "source_X_train.npy").is_file():
        return "mrssc2"
    if any((root / "train").glob("x_train*.npy")):
        return "zenodo"
    return None


def zenodo_suffixes(root: str | Path) -> list[str]:
    """The suffixes of the ``train/x_train*.npy`` files, e.g. ``['', '_noise']``."""
    return sorted(p.stem[len("x_train"):] for p in (Path(root) / "train").glob("x_train*.npy"))


def _missing_file(path: Path, root: Path, cfg: DataConfig) -> DataError:
    found = detect_layout(root)
    if found is not None and found != cfg.layout:
        hint = f"the folder holds the {found!r} layout; set data.layout: {found}"
    elif found == "zenodo":
        hint = (f"the folder has x_train files with suffixes {zenodo_suffixes(root)}; set "
                "data.source_suffix and data.target_suffix to two of them")
    else:
        hint = f"expected the {cfg.layout!r} layout of docs/data.md"
    return DataError(f"{path}: file not found; {hint}")


def _read_manifest(root: Path, cfg: DataConfig, sets: dict[str, ImageSet | None]) -> dict:
    """``manifest.json``, or a minimal description of a folder that has none."""
    path = root / "manifest.json"
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (ValueError, OSError, RecursionError) as e:
            raise DataError(f"{path}: not valid JSON ({e}); fix or delete it") from None
        if not isinstance(manifest, dict):
            raise DataError(f"{path}: must hold a JSON object, got {type(manifest).__name__}")
        return manifest
    files = {}
    for x_path, y_path in layout_paths(root, layout=cfg.layout, source_suffix=cfg.source_suffix,
                                       target_suffix=cfg.target_suffix).values():
        for f in (x_path, y_path):
            if f.is_file():
                files[str(f.relative_to(root))] = f.stat().st_size
    return {
        "generator": None,
        "note": "the folder has no manifest.json; `sidda data check DIR --write-manifest` "
                "writes one with checksums",
        "layout": cfg.layout, "source_suffix": cfg.source_suffix,
        "target_suffix": cfg.target_suffix, "bytes": files,
        "counts_per_class": {
            f"y_{k}": torch.bincount(v.y).tolist()
            for k, v in sets.items() if v is not None and v.y is not None
        },
    }


def _count_classes(
    paths: dict[str, tuple[Path, Path]], sets: dict[str, ImageSet | None], cfg: DataConfig
) -> int:
    """K = 1 + the largest label of every label file of the folder (all four splits).

    Training and ``sidda data check`` count the same K, whatever splits they load. Without
    ``data.num_classes``, classes that no image of any split holds are taken as a stray label
    (an error); ``data.num_classes`` declares them real.
    """
    labels: dict[Path, np.ndarray] = {}
    for key, (_, y_path) in paths.items():
        if sets.get(key) is not None:
            if sets[key].y is not None:
                labels[y_path] = sets[key].y.numpy()
        elif os.path.lexists(y_path):  # a split not loaded: its labels only, checked alike
            y = _open_npy(y_path)
            labels[y_path] = _check_labels(y, y_path, len(y), cfg.num_classes)
    labels = {p: y for p, y in labels.items() if len(y)}
    if not labels:
        raise DataError(f"{cfg.path}: no labelled images; the source training labels are "
                        "required")
    top = max(labels, key=lambda p: int(labels[p].max()))
    k = int(labels[top].max()) + 1
    if cfg.num_classes is not None:
        return k
    seen = np.zeros(k, dtype=bool)
    for y in labels.values():
        seen[np.unique(y)] = True
    if not seen.all():
        empty = np.flatnonzero(~seen).tolist()
        count = int((labels[top] == k - 1).sum())
        raise DataError(
            f"{top}: label {k - 1} ({count} image(s)) makes {k} classes, but no image of any "
            f"split has class(es) {short_repr(empty)}; fix the stray label(s), or set "
            f"data.num_classes: {k} if those classes are real"
        )
    return k


def load_domains(cfg: DataConfig, *, splits: tuple[str, ...] = ("train", "test")) -> DomainData:
    """Load a data folder (module docstring layouts) and check that the domains agree.

    Args:
        cfg: Where and how.
        splits: ``("train",)``, ``("test",)`` or both; a split not asked for is None.

    Raises:
        DataError: a missing, unreadable or invalid file (named in the message), or source and
            target images of different shapes.
    """
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(
            f"{root}: data folder not found; make one with `sidda data make shapes --out {root}`"
            " or `sidda data import-folder`"
        )
    kw = dict(normalize=cfg.normalize, image_size=cfg.image_size, num_classes=cfg.num_classes,
              memory_budget_mb=cfg.memory_budget_mb)
    paths = layout_paths(root, layout=cfg.layout, source_suffix=cfg.source_suffix,
                         target_suffix=cfg.target_suffix)
    sets: dict[str, ImageSet | None] = {}
    for key, (x_path, y_path) in paths.items():
        if key.split("_")[0] not in splits:
            sets[key] = None
            continue
        if not os.path.lexists(x_path):
            raise _missing_file(x_path, root, cfg)
        sets[key] = load_split(x_path, y_path, require_labels=key.endswith("_s"), **kw)
    present = [s for s in sets.values() if s is not None]
    shapes = {s.name: s.shape for s in present}
    if len(set(shapes.values())) > 1:
        raise DataError(
            "source and target images differ in shape (C, H, W): "
            + ", ".join(f"{Path(k).name} {v}" for k, v in shapes.items())
            + "; give them the same channels and size (data.image_size resizes)"
        )
    num_classes = _count_classes(paths, sets, cfg)
    if num_classes < 2:
        raise DataError(f"{root}: the labels hold a single class; classification needs >= 2")
    return DomainData(
        train_s=sets["train_s"], train_t=sets["train_t"], test_s=sets["test_s"],
        test_t=sets["test_t"], num_classes=num_classes,
        manifest=_read_manifest(root, cfg, sets),
    )  # type: ignore[arg-type]


def split_indices(n: int, val_fraction: float, *, seed: int) -> tuple[Tensor, Tensor]:
    """Random train/validation index split, reproducible from ``seed``.

    >>> tr, va = split_indices(10, 0.2, seed=0)
    >>> len(tr), len(va), sorted(torch.cat([tr, va]).tolist()) == list(range(10))
    (8, 2, True)
    """
    n_val = int(math.floor(n * val_fraction))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def _perm(n: int, seed: int, stream: int, k: int) -> Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + stream * 7919 + k) % (2**63))
    return torch.randperm(n, generator=g)


def batches(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
) -> list[Tensor]:
    """Index batches of one epoch over ``n`` items (the last one may be smaller).

    The order depends only on (seed, epoch), so a run can be resumed mid-epoch.
    """
    order = _perm(n, seed, 1, epoch) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


def cycle_batches(
    n: int, batch_size: int, *, seed: int, start: int = 0
) -> Iterator[Tensor]:
    """Endless full batches over ``n`` items, reshuffled at every pass; skips ``start`` batches.

    The target domain cycles this way so that an epoch is defined by the source, whatever the
    two sizes. Batches that straddle two passes take the rest from the next pass, so every
    batch holds ``min(batch_size, n)`` distinct-or-wrapped items.
    """
    size = min(batch_size, n)
    pos = start * size
    while True:
        p, off = divmod(pos, n)
        idx = _perm(n, seed, 2, p)[off : off + size]
        if len(idx) < size:
            idx = torch.cat([idx, _perm(n, seed, 2, p + 1)[: size - len(idx)]])
        yield idx
        pos += size


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr))


def write_manifest(
    root: str | Path,
    *,
    layout: str = "zenodo",
    source_suffix: str = "",
    target_suffix: str = "_noise",
    extra: dict | None = None,
) -> Path:
    """Describe the data files of ``root`` in ``root/manifest.json`` (written atomically).

    The manifest holds ``extra`` (generator, parameters, seed, class names) plus the layout, the
    suffixes, the counts per class of every label file, the shape and dtype of every file and
    its SHA-256. Files are streamed, never loaded whole.
    """
    root = Path(root)
    counts, shapes, dtypes, sums = {}, {}, {}, {}
    paths = layout_paths(root, layout=layout, source_suffix=source_suffix,
                         target_suffix=target_suffix)
    for key, (x_path, y_path) in paths.items():
        for kind, path in (("x", x_path), ("y", y_path)):
            if not path.is_file():
                continue
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shapes[f"{kind}_{key}"] = list(arr.shape)
            dtypes[f"{kind}_{key}"] = str(arr.dtype)
            if kind == "y":
                counts[f"y_{key}"] = np.bincount(np.asarray(arr).astype(np.int64)).tolist()
            sums[path.relative_to(root).as_posix()] = file_checksum(path)
    info = dict(extra or {})
    info.update(layout=layout, source_suffix=source_suffix, target_suffix=target_suffix,
                counts_per_class=counts, shapes=shapes, dtypes=dtypes, sha256=sums)
    return atomic_write(root / "manifest.json", json.dumps(info, indent=2, sort_keys=True))


def write_layout(
    out: str | Path,
    arrays: dict[str, np.ndarray],
    *,
    layout: str = "zenodo",
    source_suffix: str = "",
    target_suffix: str = "_noise",
    manifest: dict | None = None,
) -> Path:
    """Write source/target train/test arrays in one of the layouts of the module docstring.

    Args:
        out: Output folder; created, and must not already hold a data set.
        arrays: Keys ``x_train_s, y_train_s, x_test_s, y_test_s, x_train_t, y_train_t,
            x_test_t, y_test_t`` (target labels may be absent).
        layout: ``"zenodo"`` or ``"mrssc2"``.
        source_suffix: Suffix of the source files (zenodo layout).
        target_suffix: Suffix of the target files (zenodo layout).
        manifest: Extra facts (generator, parameters, seed) stored in ``manifest.json`` with
            the counts per class, shapes and the checksums of every file (:func:`write_manifest`).
    """
    out = Path(out)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if (out / "manifest.json").exists() or detect_layout(out) or (out / "train").exists():
        raise FileExistsError(f"{out}: already holds a data set; choose another --out or remove it")
    paths = layout_paths(out, layout=layout, source_suffix=source_suffix,
                         target_suffix=target_suffix)
    for key, (x_path, y_path) in paths.items():
        for kind, path in (("x", x_path), ("y", y_path)):
            if f"{kind}_{key}" in arrays:
                path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_save_npy(path, np.asarray(arrays[f"{kind}_{key}"]))
    write_manifest(out, layout=layout, source_suffix=source_suffix, target_suffix=target_suffix,
                   extra=manifest)
    return out
