"""Bring your own data and look at it before training.

- :func:`import_image_folders` converts folders of PNG/JPEG images (one sub-folder per class)
  into the on-disk layout of :mod:`sidda.datasets` (``sidda data import-folder``);
- :func:`resolve_data_config` works out the layout and suffixes of a data folder;
- :func:`check_data` validates a folder and summarises it (``sidda data check``);
- :func:`sample_grid` draws samples per class, source beside target (``sidda data show``).

The converter reads images with Pillow. Each image becomes float32 in [0, 1] (8-bit values are
divided by 255, 16-bit ones by 65535; 32-bit float images are kept as they are), is cropped to
its central square (``fit="crop"``) or stretched (``fit="stretch"``), and is resized to S x S
with bicubic interpolation, the PIL default that the authors' notebooks use. Class names are the
sorted sub-folder names; label k is the k-th name. Each domain is split into train and test per
class (stratified) with a seeded permutation: a class of n images gives
``clip(ceil(n * test_fraction), 1, n - 1)`` test images (ceil, as the generators and
scikit-learn's ``train_test_split``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sidda.datasets import (
    MAX_IMAGE_SIZE,
    DataConfig,
    DataError,
    DomainData,
    detect_layout,
    file_checksum,
    layout_paths,
    load_domains,
    scan_images,
    write_layout,
    zenodo_suffixes,
)
from sidda.errors import InputError
from sidda.runs import atomic_dir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataSummary",
    "FileSummary",
    "check_data",
    "format_summary",
    "import_image_folders",
    "resolve_data_config",
    "sample_grid",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_SOURCE_SUFFIXES = ("", "_sdss")  # source suffixes of the published sets, in order of preference


# ------------------------------------------------------------------------------ converter


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _scan_folder(root: Path, what: str) -> tuple[list[str] | None, list[Path], list[int]]:
    """(class names or None for a flat folder, image files, labels (-1 when unlabelled))."""
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder not found")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    flat = _list_images(root)
    if subdirs and flat:
        raise DataError(
            f"{root}: holds both image files ({flat[0].name}, ...) and class folders "
            f"({subdirs[0].name}, ...); put every image in a class folder, or (unlabelled "
            "target only) use no class folders at all"
        )
    if not subdirs:
        if not flat:
            raise DataError(
                f"{root}: {what} folder holds no images; expected one sub-folder of images "
                f"({', '.join(IMAGE_EXTENSIONS)}) per class"
            )
        return None, flat, [-1] * len(flat)
    files, labels = [], []
    for k, d in enumerate(subdirs):
        images = _list_images(d)
        if not images:
            raise DataError(
                f"{d}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images "
                "or remove the folder"
            )
        files += images
        labels += [k] * len(images)
    return [d.name for d in subdirs], files, labels


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({e}); fix or remove the file") from None


def _pixels(path: Path, *, channels: int, size: int, fit: str) -> np.ndarray:
    """One image file -> (size, size, channels) float32 in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode.startswith("I;16") or mode == "I":
                arr = np.asarray(im, dtype=np.float32) / 65535.0  # (H, W), 16-bit
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            else:
                arr = np.asarray(im.convert("L" if channels == 1 else "RGB"),
                                 dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({e}); fix or remove the file") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W, 1)
    if arr.shape[2] != channels:
        arr = np.repeat(arr, channels, axis=2)  # grey -> RGB
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: image has non-finite pixels (NaN or inf); fix or remove it")
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
    if mode != "F":
        arr = np.clip(arr, 0.0, 1.0)  # bicubic overshoot
    return arr.astype(np.float32, copy=False)


def _stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator, where: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test indices, ``clip(ceil(n f), 1, n - 1)`` test items per class."""
    train, test = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if len(idx) < 2:
            name = f"class {int(k)}" if k >= 0 else "the folder"
            raise DataError(
                f"{where}: {name} has {len(idx)} image; each class needs at least 2 (one for "
                "training, one for testing)"
            )
        n_test = min(max(math.ceil(len(idx) * test_fraction - 1e-9), 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def import_image_folders(
    source: str | Path,
    target: str | Path,
    out: str | Path,
    *,
    image_size: int | None = None,
    test_fraction: float = 0.2,
    random_state: int = 0,
    fit: str = "crop",
    channels: int | None = None,
) -> Path:
    """Convert two folders of images into a data folder in the zenodo layout.

    Args:
        source: Folder with one sub-folder of images per class (labelled source domain).
        target: The same class sub-folders (labelled target, labels used for evaluation only),
            or a flat folder of images (unlabelled target).
        out: Output folder; must not exist or be empty. Written atomically.
        image_size: Side S of the square output images; None keeps the images' common size
            (an error if they differ).
        test_fraction: Fraction of each class (each domain) kept for testing, in (0, 1).
        random_state: Seed of the train/test split.
        fit: ``"crop"`` takes the central square of a non-square image; ``"stretch"``
            resizes it whole.
        channels: 1 or 3; None gives 3 if any image is in colour, else 1.

    Returns:
        ``out``, holding the layout, ``manifest.json`` (with ``class_names``) and ``index.csv``
        (which file became which array row).

    Raises:
        DataError: an empty folder or class folder, an unreadable image (named), class folders
            that differ between source and target, images too small for the models.
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must lie in (0, 1), got {test_fraction}; e.g. 0.2")
    if fit not in ("crop", "stretch"):
        raise InputError(f"fit must be 'crop' or 'stretch', got {fit!r}")
    if channels not in (None, 1, 3):
        raise InputError(f"channels must be 1, 3 or None (automatic), got {channels!r}")
    if image_size is not None and not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise InputError(
            f"--image-size must lie in 8..{MAX_IMAGE_SIZE} (the models pool three times and "
            f"take at most {MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}), got {image_size}"
        )
    source, target, out = Path(source), Path(target), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out")
    names_s, files_s, labels_s = _scan_folder(source, "source")
    if names_s is None:
        raise DataError(
            f"{source}: the source folder must hold one sub-folder of images per class "
            "(its name is the class name); it holds images directly"
        )
    if len(names_s) < 2:
        raise DataError(
            f"{source}: only one class folder ({names_s[0]}); classification needs >= 2"
        )
    names_t, files_t, labels_t = _scan_folder(target, "target")
    if names_t is not None and names_t != names_s:
        only_s, only_t = sorted(set(names_s) - set(names_t)), sorted(set(names_t) - set(names_s))
        raise DataError(
            f"{target}: the class folders differ from the source's ({source}): only in source "
            f"{only_s}, only in target {only_t}; give both the same class folders, or make the "
            "target a flat folder of unlabelled images"
        )

    headers = [_header(p) for p in files_s + files_t]
    if channels is None:
        channels = 1 if all(mode in _GRAY_MODES for mode, _ in headers) else 3
    if image_size is None:
        # crop: every central square must have one side; stretch: every image one square size
        sides = {min(wh) if fit == "crop" else wh for _, wh in headers}
        if len(sides) > 1 or (fit == "stretch" and len(set(next(iter(sides)))) > 1):
            examples = sorted(f"{w}x{h}" for _, (w, h) in headers)
            raise DataError(
                f"{source}, {target}: the images differ in size or are not square (e.g. "
                f"{', '.join(sorted(set(examples))[:3])}); pass --image-size"
            )
        side = next(iter(sides))
        image_size = side if isinstance(side, int) else side[0]
        if image_size < 8:
            raise DataError(
                f"{source}: images of {image_size}x{image_size} pixels are too small for the "
                "models (at least 8x8); pass --image-size 8 or more"
            )

    seqs = np.random.SeedSequence(random_state).spawn(2)
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for dom, root, files, labels, seq in (("s", source, files_s, labels_s, seqs[0]),
                                          ("t", target, files_t, labels_t, seqs[1])):
        lab = np.asarray(labels, dtype=np.int64)
        tr, te = _stratified_split(lab, test_fraction, np.random.default_rng(seq), root)
        for split, idx in (("train", tr), ("test", te)):
            x = np.empty((len(idx), image_size, image_size, channels), dtype=np.float32)
            for i, j in enumerate(idx):
                x[i] = _pixels(files[j], channels=channels, size=image_size, fit=fit)
                rows.append({"domain": "source" if dom == "s" else "target", "split": split,
                             "index": i, "label": int(lab[j]) if lab[j] >= 0 else "",
                             "file": files[j].relative_to(root).as_posix()})
            arrays[f"x_{split}_{dom}"] = x
            if names_t is not None or dom == "s":
                arrays[f"y_{split}_{dom}"] = lab[idx]
        logger.info("%s: %d images -> %d train, %d test", root, len(files), len(tr), len(te))

    manifest = {
        "generator": "image-folder", "source_folder": str(source.resolve()),
        "target_folder": str(target.resolve()), "class_names": names_s,
        "target_labelled": names_t is not None, "image_size": image_size, "channels": channels,
        "fit": fit, "resample": "bicubic", "test_fraction": test_fraction, "seed": random_state,
        "scale": "8-bit / 255, 16-bit / 65535, float kept",
    }
    with atomic_dir(out) as tmp:
        tmp.mkdir()
        with open(tmp / "index.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["domain", "split", "index", "label", "file"])
            w.writeheader()
            w.writerows(rows)
        write_layout(tmp, arrays, target_suffix="_target", manifest=manifest)
    return out


# ------------------------------------------------------------------------- check and show


def _read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError, RecursionError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); fix or delete it") from None
    return manifest if isinstance(manifest, dict) else {}


def resolve_data_config(
    path: str | Path,
    *,
    layout: str | None = None,
    source_suffix: str | None = None,
    target_suffix: str | None = None,
    **options: object,
) -> DataConfig:
    """A :class:`~sidda.datasets.DataConfig` for ``path``, filling in what is not given.

    The layout comes from the manifest or the files present. Zenodo suffixes come from the
    manifest, else from the ``train/x_train*.npy`` files: the source is the unsuffixed file (or
    ``_sdss``), the target the one other suffix.

    Raises:
        DataError: not a data folder, or the suffixes are ambiguous (pass them explicitly).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    manifest = _read_manifest(root)
    layout = layout or manifest.get("layout") or detect_layout(root)
    if layout is None:
        raise DataError(
            f"{root}: not a data folder; expected train/x_train*.npy (zenodo layout) or "
            "source_X_train.npy (mrssc2 layout), see docs/data.md"
        )
    if layout == "zenodo":
        found = zenodo_suffixes(root)
        if source_suffix is None:
            source_suffix = manifest.get("source_suffix")
        if source_suffix is None:
            source_suffix = next((s for s in _SOURCE_SUFFIXES if s in found), None)
            if source_suffix is None:
                raise DataError(
                    f"{root}: cannot tell the source files among suffixes {found}; pass "
                    "--source-suffix"
                )
        if target_suffix is None:
            target_suffix = manifest.get("target_suffix")
        if target_suffix is None:
            others = [s for s in found if s != source_suffix]
            if len(others) != 1:
                raise DataError(
                    f"{root}: {'no' if not others else 'several'} target files besides the "
                    f"source ({source_suffix!r}) among suffixes {found}; pass --target-suffix"
                )
            target_suffix = others[0]
    extra = {k: v for k, v in (("source_suffix", source_suffix),
                               ("target_suffix", target_suffix)) if v is not None}
    return DataConfig(path=str(root), layout=layout, **extra, **options)  # type: ignore[arg-type]


@dataclass
class FileSummary:
    """One image file of a data folder, as :func:`check_data` saw it."""

    key: str  # train_s, train_t, test_s, test_t
    file: str  # relative to the folder
    n: int
    shape: tuple[int, ...]  # one image, as stored (H, W[, C])
    dtype: str
    min: float
    max: float
    mean: float
    counts: list[int] | None  # images per class, or None (unlabelled)
    memory_mapped: bool


@dataclass
class DataSummary:
    """What :func:`check_data` found: per-file facts, classes and warnings."""

    root: Path
    cfg: DataConfig
    files: list[FileSummary]
    num_classes: int
    class_names: list[str] | None
    model_shape: tuple[int, int, int]  # (C, H, W) the models see
    manifest: dict
    warnings: list[str] = field(default_factory=list)
    checksums_verified: int | None = None


def check_data(cfg: DataConfig, *, verify: bool = False) -> DataSummary:
    """Validate a data folder completely and summarise it.

    Loads every split with :func:`~sidda.datasets.load_domains` (which raises
    :class:`~sidda.datasets.DataError` on any invalid file), then scans each image file chunk
    by chunk for its value range.

    Args:
        cfg: The folder and how it is read.
        verify: Also recompute the SHA-256 of every file listed in the manifest (slow for
            large files) and fail on a mismatch.
    """
    data = load_domains(cfg)
    root = Path(cfg.path)
    paths = layout_paths(root, layout=cfg.layout, source_suffix=cfg.source_suffix,
                         target_suffix=cfg.target_suffix)
    files = []
    for key, s in (("train_s", data.train_s), ("train_t", data.train_t),
                   ("test_s", data.test_s), ("test_t", data.test_t)):
        raw = np.load(paths[key][0], mmap_mode="r", allow_pickle=False)
        stats = scan_images(raw)
        counts = None if s.y is None else torch.bincount(
            s.y, minlength=data.num_classes).tolist()
        files.append(FileSummary(
            key=key, file=paths[key][0].relative_to(root).as_posix(), n=len(raw),
            shape=tuple(raw.shape[1:]), dtype=str(raw.dtype), min=stats.min, max=stats.max,
            mean=stats.mean, counts=counts, memory_mapped=s.memory_mapped,
        ))
    manifest = data.manifest
    names = manifest.get("class_names")
    summary = DataSummary(
        root=root, cfg=cfg, files=files, num_classes=data.num_classes,
        class_names=list(names) if isinstance(names, list) else None,
        model_shape=data.train_s.shape, manifest=manifest,
    )
    _add_warnings(summary)
    if verify:
        summary.checksums_verified = _verify_checksums(root, manifest)
    return summary


def _add_warnings(summary: DataSummary) -> None:
    w = summary.warnings
    if summary.manifest.get("generator", "") is None and "sha256" not in summary.manifest:
        w.append("no manifest.json: add one with `sidda data check DIR --write-manifest`")
    if summary.class_names is not None and len(summary.class_names) != summary.num_classes:
        w.append(f"the manifest names {len(summary.class_names)} classes but the labels hold "
                 f"{summary.num_classes}")
    for f in summary.files:
        if summary.cfg.normalize == "half" and (f.min < -0.01 or f.max > 1.01):
            w.append(f"{f.file}: values span [{f.min:.3g}, {f.max:.3g}], outside the [0, 1] "
                     "that normalize='half' assumes (expected for the paper's noisy shapes and "
                     "astro targets)")
        if f.counts is not None:
            empty = [k for k, c in enumerate(f.counts) if c == 0]
            if empty:
                w.append(f"{f.file}: no images of class(es) {empty}")
            elif max(f.counts) > 3 * min(f.counts):
                w.append(f"{f.file}: classes are imbalanced (largest {max(f.counts)}, smallest "
                         f"{min(f.counts)}); accuracy alone may flatter the majority class")


def _verify_checksums(root: Path, manifest: dict) -> int:
    sums = manifest.get("sha256") or {}
    if not sums:
        raise DataError(f"{root}/manifest.json: lists no checksums to verify")
    for rel, expected in sums.items():
        path = root / rel
        if not path.is_file():
            raise DataError(f"{path}: listed in manifest.json but missing")
        if file_checksum(path) != expected:
            raise DataError(f"{path}: SHA-256 differs from manifest.json; the file changed or "
                            "is corrupt")
    return len(sums)


def format_summary(s: DataSummary) -> str:
    """A plain-text report of a :class:`DataSummary` (what ``sidda data check`` prints)."""
    cfg = s.cfg
    lines = [f"data folder {s.root}  layout {cfg.layout}"
             + (f"  source suffix {cfg.source_suffix!r}  target suffix {cfg.target_suffix!r}"
                if cfg.layout == "zenodo" else "")]
    m = s.manifest
    if m.get("generator") is not None:
        facts = ", ".join(f"{k} {m[k]}" for k in ("generator", "protocol", "shift", "seed")
                          if m.get(k) is not None)
        lines.append(f"manifest: {facts}")
    names = s.class_names or [str(k) for k in range(s.num_classes)]
    lines.append(f"classes: {s.num_classes} ({', '.join(names)})")
    c, h, w = s.model_shape
    lines.append(f"the model sees: {c} channel(s), {h}x{w} pixels"
                 + (f" (resized to data.image_size={cfg.image_size})" if cfg.image_size else ""))
    head = f"{'split':<6}{'domain':<8}{'file':<28}{'images':>8}  {'shape':<14}{'dtype':<9}" \
           f"{'min':>9}{'max':>9}{'mean':>9}  counts per class"
    lines += ["", head, "-" * len(head)]
    for f in s.files:
        split, dom = f.key.split("_")
        counts = "unlabelled" if f.counts is None else " ".join(map(str, f.counts))
        lines.append(
            f"{split:<6}{'source' if dom == 's' else 'target':<8}{f.file[-27:]:<28}{f.n:>8}  "
            f"{'x'.join(map(str, f.shape)):<14}{f.dtype:<9}{f.min:>9.3g}{f.max:>9.3g}"
            f"{f.mean:>9.3g}  {counts}" + ("  [memory-mapped]" if f.memory_mapped else "")
        )
    by = {f.key: f.n for f in s.files}
    lines.append("")
    lines.append(f"domain sizes: source {by['train_s']} train + {by['test_s']} test, target "
                 f"{by['train_t']} train + {by['test_t']} test")
    if s.checksums_verified is not None:
        lines.append(f"checksums: {s.checksums_verified} files match manifest.json")
    lines += [f"warning: {w}" for w in s.warnings]
    lines.append("ok: the folder is valid")
    return "\n".join(lines)


def _display(x: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) in [0, 1] for imshow."""
    img = ((x.float() - lo) / max(hi - lo, 1e-12)).clamp(0, 1).numpy()
    return img[0] if img.shape[0] < 3 else np.moveaxis(img[:3], 0, -1)


def sample_grid(
    data: DomainData,
    *,
    per_class: int = 6,
    class_names: list[str] | None = None,
    random_state: int = 0,
    scale: str = "domain",
    title: str = "",
) -> Figure:
    """A grid of training images: one row per class, source samples left, target right.

    A target without labels fills its side with random samples instead. Pixel values are
    mapped to grey levels (or RGB) per domain between the 0.5th and 99.5th percentiles of the
    shown images (``scale="domain"``, which keeps intensity differences between images
    visible) or per image (``scale="image"``).

    Returns:
        A matplotlib ``Figure`` (no pyplot state), to ``savefig``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is installed with the plot extra
        raise ImportError("drawing needs matplotlib: pip install 'sidda[plot]'") from e
    if scale not in ("domain", "image"):
        raise InputError(f"scale must be 'domain' or 'image', got {scale!r}")
    if per_class < 1:
        raise InputError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(random_state)
    k = data.num_classes
    names = class_names or [str(i) for i in range(k)]

    def pick(s) -> list[list[int]]:  # noqa: ANN001 - ImageSet
        if s.y is None:
            idx = rng.permutation(len(s))[: k * per_class].tolist()
            return [idx[r * per_class:(r + 1) * per_class] for r in range(k)]
        y = s.y.numpy()
        return [rng.permutation(np.flatnonzero(y == c))[:per_class].tolist() for c in range(k)]

    blocks = []
    for label, s in (("source", data.train_s), ("target", data.train_t)):
        rows = pick(s)
        flat = [i for r in rows for i in r]
        imgs = s.x[torch.tensor(flat, dtype=torch.int64)]  # (n, C, H, W)
        lo, hi = np.percentile(imgs.numpy(), [0.5, 99.5]).tolist()
        blocks.append((label, s, rows, dict(zip(flat, imgs, strict=True)), lo, hi))

    cols = 2 * per_class + 1  # source block, a narrow gap, target block
    cell = 1.0 if per_class <= 8 else 0.7
    width, height = (2 * per_class + 0.4) * cell + 1.3, k * cell + 1.0
    fig = Figure(figsize=(width, height), dpi=100)
    grid = fig.add_gridspec(k, cols, left=1.3 / width, right=0.99, bottom=0.02,
                            top=1 - 0.8 / height, wspace=0.05, hspace=0.05,
                            width_ratios=[1] * per_class + [0.4] + [1] * per_class)
    for b, (label, s, rows, imgs, lo, hi) in enumerate(blocks):
        c0 = b * (per_class + 1)
        box = grid[0, c0 : c0 + per_class].get_position(fig)
        note = ", unlabelled: random samples" if s.y is None else ""
        fig.text((box.x0 + box.x1) / 2, box.y1 + 0.1 / height,
                 f"{label}{note}\n{Path(s.name).name}: {len(s)} images",
                 ha="center", va="bottom", fontsize=9)
        for r in range(k):
            for j in range(per_class):
                ax = fig.add_subplot(grid[r, c0 + j])
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if j < len(rows[r]):
                    x = imgs[rows[r][j]]
                    a, z = (float(x.min()), float(x.max())) if scale == "image" else (lo, hi)
                    ax.imshow(_display(x, a, z), cmap="gray", vmin=0, vmax=1,
                              interpolation="nearest")
                if b == 0 and j == 0:
                    ax.set_ylabel(names[r], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, y=0.995, ha="left", va="top")
    return fig
