"""Images in memory or memory-mapped, as the models see them: float32 (N, C, H, W).

- :func:`load_split`: one image file (and its label file) -> :class:`ImageSet`;
- :class:`ImageSet`: images with optional labels; :class:`DomainData`: the four splits;
- :class:`MappedImages`: a file above ``DataConfig.memory_budget_mb``, converted per batch;
- :func:`split_indices`: the seeded train/validation split.

Images on disk are NHW (one channel), NHWC or NCHW with any number C >= 1 of channels (bands),
float or integer. Both the in-memory and the memory-mapped path convert them with one function,
``_convert_block``: float32, normalised per image by ``DataConfig.normalize``
(:func:`~sidda.datasets.normalize_bands`; the default is the paper's ``x -> (x - 0.5) / 0.5``)
at the stored resolution, then resized to ``image_size`` (bilinear, antialiased).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from sidda.datasets.normalize import normalize_bands
from sidda.datasets.npyfiles import (
    _CHUNK_BYTES,
    DataError,
    _check_labels,
    _chunk_rows,
    _open_npy,
    nonfinite_error,
    scan_images,
)

__all__ = ["MAX_IMAGE_SIZE", "DomainData", "ImageSet", "MappedImages", "convert_images",
           "load_split", "open_images", "split_indices"]

logger = logging.getLogger(__name__)

#: Largest image side the models take (a bigger one would allocate tens of GB at once).
MAX_IMAGE_SIZE = 1024


def _channels_first(shape: tuple[int, ...], path: Path) -> bool:
    """Whether 4-D images of ``shape`` (N, a, b, c) are NCHW rather than NHWC (any C >= 1).

    The channel axis is the first or the last one after N. The rule, in order:

    1. the reading that gives square images wins (NHWC when a == b, NCHW when b == c);
    2. both square (a == b == c, e.g. 8 bands of 8x8): NHWC, the documented layout;
    3. neither square (non-square images, resized by ``data.image_size``): the smaller of a
       and c holds the channels.

    ``data.channels_first`` overrides the rule.
    """
    _, a, b, c = shape
    nhwc_square, nchw_square = a == b, b == c
    if nhwc_square != nchw_square:
        return nchw_square
    if nhwc_square:
        logger.info("%s: images of shape %s read as NHWC (%d channels of %dx%d); set "
                    "data.channels_first: true if they are NCHW", path, shape, c, a, b)
        return False
    if a == c:
        raise DataError(
            f"{path}: cannot tell the channel axis of images of shape {shape} (the first and "
            "last axes after N have the same length and neither reading gives square images); "
            "set data.channels_first: true for (N, C, H, W) or false for (N, H, W, C)"
        )
    return a < c


def _as_nchw(x: np.ndarray, path: Path, channels_first: bool | None = None) -> np.ndarray:
    """NHW, NHWC or NCHW images -> an NCHW view; ``channels_first`` None applies
    :func:`_channels_first`."""
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if channels_first is None:
            channels_first = _channels_first(x.shape, path)
        return x if channels_first else np.moveaxis(x, -1, 1)
    raise DataError(
        f"{path}: images must be NHW, NHWC or NCHW (3-D or 4-D), got {x.ndim}-D shape {x.shape}"
    )


def open_images(path: str | Path, channels_first: bool | None = None) -> np.ndarray:
    """The images of a ``.npy`` file as stored, memory-mapped, as an (N, C, H, W) view: NHW,
    NHWC or NCHW told apart as training reads them (``channels_first``, else
    :func:`_channels_first`). The file is checked (a regular file, a sound header, 3-D or
    4-D), its values are not.

    Raises:
        DataError: the file does not read as images (the message names it).
    """
    path = Path(path)
    return _as_nchw(_open_npy(path), path, channels_first)


def _convert_block(
    part: np.ndarray, *, normalize: str, size: tuple[int, int] | None
) -> Tensor:
    """NCHW rows of any numeric dtype -> float32 tensor (B, C, H', W'), normalised and resized.

    The one conversion of both the in-memory and the memory-mapped path.
    """
    with np.errstate(over="ignore"):  # float64 beyond float32 -> inf, reported by the caller
        t = torch.from_numpy(np.array(part, dtype=np.float32, order="C"))  # (B, C, H, W), copy
    t = normalize_bands(t, normalize)
    if size is not None and tuple(t.shape[2:]) != size:
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return t


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
        normalize: A mode of :func:`~sidda.datasets.normalize_bands`, as ``DataConfig``.
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


def convert_images(x: np.ndarray, *, normalize: str, image_size: int | None, name: object
                   ) -> Tensor:
    """NCHW array (memory-mapped or not) -> float32 tensor in memory, chunk by chunk: each
    image normalised (``data.normalize``) and resized as training loads it."""
    n, c, h, w = x.shape
    size = (image_size, image_size) if image_size else (h, w)
    out = torch.empty((n, c, *size), dtype=torch.float32)
    step = _chunk_rows(x, _CHUNK_BYTES)
    for i in range(0, n, step):
        part = _convert_block(x[i : i + step], normalize=normalize, size=size)
        finite = torch.isfinite(part).flatten(1).all(1)
        if not finite.all():
            bad = i + int((~finite).nonzero()[0])
            with np.errstate(over="ignore", invalid="ignore"):
                raw = np.asarray(x[bad], dtype=np.float32)
            if np.isfinite(raw).all():  # the normalisation overflowed, not the pixels
                raise DataError(
                    f"{name}: image {bad} has pixels up to {float(np.abs(raw).max()):.3g}, "
                    f"which overflow float32 under data.normalize={normalize}; rescale the "
                    "images to a smaller range")
            raise nonfinite_error(name, bad)
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
    channels_first: bool | None = None,
) -> ImageSet:
    """Load one image file and its label file into an :class:`ImageSet`.

    Images whose float32 tensor would exceed ``memory_budget_mb`` stay memory-mapped
    (:class:`MappedImages`); they are scanned for non-finite pixels chunk by chunk here.
    4-D images may hold any number of channels, last (NHWC) or first (NCHW); ``channels_first``
    None tells them apart by the rule of ``_channels_first``.

    Raises:
        DataError: missing or unreadable file, wrong rank or channel count, images too small or
            not square, non-finite pixels, label problems; the message names the file.
    """
    images = Path(images)
    x = _open_npy(images)
    if x.ndim not in (3, 4):
        raise DataError(
            f"{images}: images must be NHW or NHWC (or NCHW; 3-D or 4-D), got {x.ndim}-D shape "
            f"{x.shape}"
        )
    if len(x) == 0:
        raise DataError(f"{images}: holds no images (empty domain)")
    if x.dtype.kind not in "iuf":  # not bool, complex, datetime, timedelta, str, structured
        raise DataError(f"{images}: images must be numeric, got dtype {x.dtype}")
    x = _as_nchw(x, images, channels_first)
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
            raise nonfinite_error(images, stats.first_nonfinite)
        t = MappedImages(x, normalize=normalize, image_size=image_size)
        if memory_budget_mb > 0:  # 0 asks for memory-mapping: nothing to tell
            logger.info("%s: %.0f MB as float32 exceeds data.memory_budget_mb=%d; kept "
                        "memory-mapped and converted per batch", images, out_bytes / 2**20,
                        memory_budget_mb)
    else:
        t = convert_images(x, normalize=normalize, image_size=image_size, name=images)
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


def split_indices(n: int, val_fraction: float, *, seed: int) -> tuple[Tensor, Tensor]:
    """Random train/validation index split, reproducible from ``seed``.

    >>> tr, va = split_indices(10, 0.2, seed=0)
    >>> len(tr), len(va), sorted(torch.cat([tr, va]).tolist()) == list(range(10))
    (8, 2, True)
    """
    n_val = int(math.floor(n * val_fraction))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]
