"""Image sets on disk and in memory, and the batches that training reads from them.

On-disk layout (the authors' Zenodo record; spec 3.7)::

    DIR/train/x_train.npy  y_train.npy                 source (no suffix)
    DIR/train/x_train_noise.npy  [y_train_noise.npy]   target (suffix; labels optional)
    DIR/test/x_test.npy  y_test.npy  x_test_noise.npy  [y_test_noise.npy]
    DIR/manifest.json                                   optional: how the data was made

Images are NHWC or NHW (one channel), float or integer; labels are 1-D integers or integral
floats in 0..K-1. Arrays are opened memory-mapped and converted once to compact float32
NCHW tensors, normalised as the paper does (``x -> (x - 0.5) / 0.5``). Target labels are never
needed for training; evaluation uses them when present.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "DataConfig",
    "DataError",
    "DomainData",
    "ImageSet",
    "batches",
    "cycle_batches",
    "load_domains",
    "load_split",
    "split_indices",
    "write_layout",
]

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Input data that cannot be used, with a message naming the file and the fix."""


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is read.

    Attributes:
        path: Folder in the layout of the module docstring.
        target_suffix: Suffix of the target domain files (``_noise``, ``_PSF``, ``_desi``).
        source_suffix: Suffix of the source files (empty for the paper's sets, ``_sdss`` for GZ).
        val_fraction: Fraction of each domain's training set held out for validation.
        image_size: Resize images to this size (bilinear), or None to keep them.
        normalize: ``"half"`` maps x to (x - 0.5)/0.5 as the paper; ``"none"`` keeps x.
        num_classes: Number of classes, or None to infer it from the source labels.
    """

    path: str = "data/shapes"
    target_suffix: str = "_noise"
    source_suffix: str = ""
    val_fraction: float = 0.2
    image_size: int | None = None
    normalize: str = "half"
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ValueError(
                f"data.val_fraction must lie in [0, 1), got {self.val_fraction}; the paper uses 0.2"
            )
        if self.normalize not in ("half", "none"):
            raise ValueError(f"data.normalize must be 'half' or 'none', got {self.normalize!r}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"data.image_size must be >= 8 or null, got {self.image_size}")
        if self.source_suffix == self.target_suffix:
            raise ValueError(
                f"data.source_suffix and data.target_suffix are both {self.source_suffix!r}; "
                "the target files need their own suffix, e.g. '_noise'"
            )


def _open_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path}: not a readable .npy array ({e}); re-save it with numpy.save"
        ) from None


def _check_labels(y: np.ndarray, path: Path, n: int, num_classes: int | None) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{path}: labels must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels for {n} images; the two files must match")
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{path}: labels must be numbers, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{path}: labels must be whole numbers 0..K-1, found non-integral values")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels must be in 0..K-1, found {int(y.min())}")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise DataError(
            f"{path}: label {int(y.max())} is outside 0..{num_classes - 1} "
            f"({num_classes} classes); fix the labels or set data.num_classes"
        )
    return y


def _as_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[-1] <= 4 < x.shape[1]:
            return np.moveaxis(x, -1, 1)
        if x.shape[1] <= 4:
            return x
        raise DataError(
            f"{path}: cannot tell the channel axis of images of shape {x.shape}; "
            "store them as NHWC (N, H, W, C) with C <= 4"
        )
    raise DataError(
        f"{path}: images must be NHW or NHWC (3-D or 4-D), got {x.ndim}-D shape {x.shape}"
    )


@dataclass
class ImageSet:
    """Images (N, C, H, W) float32, normalised, with optional int64 labels (N,).

    Attributes:
        x: Images as a float32 tensor (N, C, H, W).
        y: Labels (N,) int64, or None (unlabelled domain).
        name: A short description for messages (the file it came from).
    """

    x: Tensor
    y: Tensor | None
    name: str = ""

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, idx: Tensor) -> ImageSet:
        """The images (and labels) at ``idx``."""
        return ImageSet(self.x[idx], None if self.y is None else self.y[idx], self.name)


def _convert(x: np.ndarray, *, normalize: str, image_size: int | None, chunk: int = 1024) -> Tensor:
    """NCHW array (memory-mapped or not) -> float32 tensor, chunk by chunk."""
    n, c, h, w = x.shape
    size = (image_size, image_size) if image_size else (h, w)
    out = torch.empty((n, c, *size), dtype=torch.float32)
    for i in range(0, n, chunk):
        part = torch.from_numpy(np.array(x[i : i + chunk], dtype=np.float32))
        if normalize == "half":
            part = (part - 0.5) / 0.5
        if size != (h, w):
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False,
                                 antialias=True)
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
) -> ImageSet:
    """Load one image file and its label file into an :class:`ImageSet`.

    Raises:
        DataError: missing or unreadable file, wrong rank, non-finite pixels, label problems.
    """
    images = Path(images)
    x = _open_npy(images)
    if len(x) == 0:
        raise DataError(f"{images}: holds no images (empty domain)")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{images}: images must be numeric, got dtype {x.dtype}")
    x = _as_nchw(x, images)
    if min(x.shape[2:]) < 8:
        raise DataError(
            f"{images}: images of {x.shape[2]}x{x.shape[3]} pixels are too small for the "
            "models (at least 8x8); resize them"
        )
    if x.shape[2] != x.shape[3] and image_size is None:
        raise DataError(
            f"{images}: images must be square, got {x.shape[2]}x{x.shape[3]}; set data.image_size"
        )
    t = _convert(x, normalize=normalize, image_size=image_size)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).flatten(1).any(1).nonzero()[0])
        raise DataError(f"{images}: image {bad} has non-finite pixels (NaN or inf); fix or drop it")
    y = None
    if labels is not None and Path(labels).is_file():
        y = torch.from_numpy(_check_labels(_open_npy(Path(labels)), Path(labels), len(t),
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


def _paths(root: Path, split: str, suffix: str) -> tuple[Path, Path]:
    return (root / split / f"x_{split}{suffix}.npy", root / split / f"y_{split}{suffix}.npy")


def load_domains(cfg: DataConfig, *, splits: tuple[str, ...] = ("train", "test")) -> DomainData:
    """Load a data folder (module docstring layout) and check that the domains agree.

    Args:
        cfg: Where and how.
        splits: ``("train",)``, ``("test",)`` or both; a split not asked for is None.
    """
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(
            f"{root}: data folder not found; make one with `sidda data make shapes --out {root}`"
        )
    kw = dict(normalize=cfg.normalize, image_size=cfg.image_size, num_classes=cfg.num_classes)
    sets: dict[str, ImageSet | None] = {}
    for split in ("train", "test"):
        if split not in splits:
            sets[split + "_s"] = sets[split + "_t"] = None
            continue
        sets[split + "_s"] = load_split(*_paths(root, split, cfg.source_suffix), **kw)
        sets[split + "_t"] = load_split(
            *_paths(root, split, cfg.target_suffix), require_labels=False, **kw
        )
    present = [s for s in sets.values() if s is not None]
    shapes = {s.name: s.shape for s in present}
    if len(set(shapes.values())) > 1:
        raise DataError(
            "source and target images differ in shape: "
            + ", ".join(f"{Path(k).name} {v}" for k, v in shapes.items())
            + "; resize them to one size (data.image_size)"
        )
    labelled = [s.y for s in present if s.y is not None]
    num_classes = int(max(int(y.max()) for y in labelled)) + 1
    if num_classes < 2:
        raise DataError(f"{root}: the labels hold a single class; classification needs >= 2")
    manifest = {}
    if (root / "manifest.json").is_file():
        manifest = json.loads((root / "manifest.json").read_text())
    return DomainData(
        train_s=sets["train_s"], train_t=sets["train_t"], test_s=sets["test_s"],
        test_t=sets["test_t"], num_classes=num_classes, manifest=manifest,
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


def batches(n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[Tensor]:
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
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_layout(
    out: str | Path,
    arrays: dict[str, np.ndarray],
    *,
    target_suffix: str = "_noise",
    manifest: dict | None = None,
) -> Path:
    """Write source/target train/test arrays in the layout of the module docstring.

    Args:
        out: Output folder; created, and must not already hold a data set.
        arrays: Keys ``x_train_s, y_train_s, x_test_s, y_test_s, x_train_t, y_train_t,
            x_test_t, y_test_t`` (target labels may be absent).
        target_suffix: Suffix of the target files.
        manifest: Extra facts (generator, parameters, seed) stored in ``manifest.json`` with
            the counts per class and the checksums of every file.
    """
    out = Path(out)
    if (out / "manifest.json").exists() or (out / "train").exists():
        raise FileExistsError(f"{out}: already holds a data set; choose another --out or remove it")
    files = {}
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
        for dom, suffix in (("s", ""), ("t", target_suffix)):
            for kind in ("x", "y"):
                key = f"{kind}_{split}_{dom}"
                if key not in arrays:
                    continue
                path = out / split / f"{kind}_{split}{suffix}.npy"
                _atomic_save_npy(path, np.asarray(arrays[key]))
                files[str(path.relative_to(out))] = file_checksum(path)
    counts = {
        key: np.bincount(np.asarray(arrays[key]).astype(np.int64)).tolist()
        for key in sorted(arrays) if key.startswith("y_")
    }
    info = dict(manifest or {})
    info.update(
        target_suffix=target_suffix,
        counts_per_class=counts,
        shapes={k: list(np.shape(v)) for k, v in sorted(arrays.items())},
        sha256=files,
    )
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    os.replace(tmp, out / "manifest.json")
    return out
