"""Bring your own images: :func:`import_image_folders` (``sidda data import-folder``).

It converts two folders of PNG/JPEG images or of FITS cutouts (one sub-folder per class) into
the zenodo layout of :mod:`sidda.datasets.layout`, the target files suffixed ``_target``; the
manifest records that suffix, so a config that names none finds the target files.

FITS cutouts (:mod:`sidda.datasets.fits`) keep their values as float32 and their band count
C >= 1 (the ``channels`` option is for PNG/JPEG); every file must have the same C. Cropping
and resizing act on each band alike, without clipping.

The converter reads images with Pillow. Each image becomes float32 in [0, 1] (8-bit values are
divided by 255, 16-bit ones by 65535; 32-bit float images are kept as they are), is cropped to
its central square (``fit="crop"``) or stretched (``fit="stretch"``), and is resized to S x S
with bicubic interpolation, the PIL default that the authors' notebooks use. Class names are the
sorted sub-folder names; label k is the k-th name. Each domain is split into train and test per
class (stratified) with a seeded permutation: a class of n images gives
``clip(ceil(n * test_fraction), 1, n - 1)`` test images (ceil, as the generators and
scikit-learn's ``train_test_split``; :func:`sidda.generators._common.stratified_split`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from sidda.datasets.fits import FITS_EXTENSIONS, fits_bands, is_fits, read_fits
from sidda.datasets.imageset import MAX_IMAGE_SIZE
from sidda.datasets.layout import write_layout
from sidda.datasets.npyfiles import DataError
from sidda.errors import InputError
from sidda.generators._common import stratified_split
from sidda.runs import atomic_dir

__all__ = ["IMAGE_EXTENSIONS", "import_image_folders", "read_image_file"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_EXTENSIONS = ", ".join(IMAGE_EXTENSIONS + FITS_EXTENSIONS)  # for messages
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".")
        and (p.suffix.lower() in IMAGE_EXTENSIONS or is_fits(p))
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
                f"({_EXTENSIONS}) per class"
            )
        return None, flat, [-1] * len(flat)
    files, labels = [], []
    for k, d in enumerate(subdirs):
        images = _list_images(d)
        if not images:
            raise DataError(
                f"{d}: class folder holds no images ({_EXTENSIONS}); add images or remove the "
                "folder"
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
    """One PNG/JPEG/... image file -> (size, size, channels) float32 in [0, 1]."""
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
    return _fit(arr, size=size, fit=fit, clip=mode != "F")


def read_image_file(path: str | Path, *, channels: int, size: int, fit: str = "crop"
                    ) -> np.ndarray:
    """One image file read as :func:`import_image_folders` reads it: (size, size, C) float32.

    PNG/JPEG/... files are scaled to [0, 1] and given ``channels`` (1: grey, 3: RGB); FITS
    cutouts keep their values and bands (NaN pixels become 0), and must have ``channels``
    bands. Both are cropped to their central square (``fit="crop"``) or stretched, then
    resized with bicubic interpolation.

    Raises:
        DataError: the file cannot be read, or its band count is not ``channels``.
    """
    path = Path(path)
    if not is_fits(path):
        return _pixels(path, channels=channels, size=size, fit=fit)
    pixels, _ = read_fits(path)
    if pixels.shape[2] != channels:
        raise DataError(f"{path}: {pixels.shape[2]} band(s), but the model takes {channels}; "
                        "give it cutouts with the bands it was trained on")
    return _fit(pixels, size=size, fit=fit, clip=False)


def _is_fits_import(files: list[Path]) -> bool:
    """Whether the files are FITS cutouts; one kind per import."""
    fits_files = [p for p in files if is_fits(p)]
    if fits_files and len(fits_files) != len(files):
        other = next(p for p in files if not is_fits(p))
        raise DataError(
            f"{fits_files[0]}, {other}: FITS files and other images in one import; convert "
            "them to one kind (FITS values are kept as they are, PNG/JPEG ones scaled to [0, 1])"
        )
    return bool(fits_files)


def _fits_channels(files: list[Path], headers: list[tuple[int, tuple[int, int]]],
                   channels: int | None) -> int:
    """The one band count of every FITS file."""
    first: dict[int, Path] = {}
    for p, (bands, _) in zip(files, headers, strict=True):
        first.setdefault(bands, p)
    if len(first) > 1:
        (a, pa), (b, pb) = list(first.items())[:2]
        raise DataError(
            f"the FITS files differ in band count: {pa} has {a}, {pb} has {b}; every cutout "
            "needs the same bands"
        )
    bands = next(iter(first))
    if channels is not None and channels != bands:
        raise InputError(
            f"channels={channels} applies to PNG/JPEG images; the FITS files have {bands} "
            "band(s): leave channels unset"
        )
    return bands


def _fit(arr: np.ndarray, *, size: int, fit: str, clip: bool) -> np.ndarray:
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
        channels: 1 or 3 (PNG/JPEG images); None gives 3 if any image is in colour, else 1.
            FITS cutouts take the band count from the files (leave it None).

    Returns:
        ``out``, holding the layout, ``manifest.json`` (with ``class_names`` and the target
        files' suffix ``_target``, which loading takes when the config names none) and
        ``index.csv`` (which file became which array row).

    Raises:
        DataError: an empty folder or class folder, an unreadable image (named), class folders
            that differ between source and target, images too small for the models, FITS
            files mixed with other images, without image data or with different band counts.
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

    use_fits = _is_fits_import(files_s + files_t)
    if use_fits:
        headers = [fits_bands(p) for p in files_s + files_t]
        channels = _fits_channels(files_s + files_t, headers, channels)
    else:
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
    nan_pixels, nan_files = 0, 0
    for dom, root, files, labels, seq in (("s", source, files_s, labels_s, seqs[0]),
                                          ("t", target, files_t, labels_t, seqs[1])):
        lab = np.asarray(labels, dtype=np.int64)
        try:
            tr, te = stratified_split(lab, np.random.default_rng(seq),
                                      test_fraction=test_fraction, where=root)
        except InputError as e:
            raise DataError(str(e)) from None
        for split, idx in (("train", tr), ("test", te)):
            x = np.empty((len(idx), image_size, image_size, channels), dtype=np.float32)
            for i, j in enumerate(idx):
                if use_fits:
                    pixels, n_nan = read_fits(files[j])
                    nan_pixels, nan_files = nan_pixels + n_nan, nan_files + (n_nan > 0)
                    x[i] = _fit(pixels, size=image_size, fit=fit, clip=False)
                else:
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
        "format": "fits" if use_fits else "image",
        "scale": ("FITS values kept as float32, NaN -> 0" if use_fits
                  else "8-bit / 255, 16-bit / 65535, float kept"),
    }
    if use_fits:
        manifest["nan_pixels_replaced"] = nan_pixels
        if nan_pixels:
            logger.warning("%d NaN pixel(s) in %d FITS file(s) set to 0", nan_pixels, nan_files)
    with atomic_dir(out) as tmp:
        tmp.mkdir()
        with open(tmp / "index.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["domain", "split", "index", "label", "file"])
            w.writeheader()
            w.writerows(rows)
        write_layout(tmp, arrays, target_suffix="_target", manifest=manifest)
    return out
