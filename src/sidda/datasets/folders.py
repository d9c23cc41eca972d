"""Bring your own images: :func:`import_image_folders` (``sidda data import-folder``).

It converts two folders of PNG/JPEG images or of FITS cutouts (one sub-folder per class) into
the zenodo layout of :mod:`sidda.datasets.layout`, the target files suffixed ``_target``; the
manifest records that suffix, so a config that names none finds the target files.

Each file is read by :func:`~sidda.datasets.read_image_file` (:mod:`sidda.datasets.imagefiles`
gives the value scaling, the crop or stretch and the bicubic resize). FITS cutouts
(:mod:`sidda.datasets.fits`) keep their values as float32 and their band count C >= 1 (the
``channels`` option is for PNG/JPEG); every file must have the same C.

Class names are the sorted sub-folder names in Unicode NFC (so a folder copied from a system
that writes NFD matches); label k is the k-th name. A class folder is read recursively: images
in its sub-folders belong to the class, as ``sidda predict`` reads a folder. Each domain is
split into train and test per class (stratified) with a seeded permutation: a class of n images
gives ``clip(ceil(n * test_fraction), 1, n - 1)`` test images (ceil, as the generators and
scikit-learn's ``train_test_split``; :func:`sidda.generators._common.stratified_split`). With
``target_test``, every target image goes to the target's training split and that folder,
labelled by class folders, becomes the target test split.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sidda.datasets.fits import check_hdus, fits_bands, is_fits, read_fits
from sidda.datasets.imagefiles import (
    ALL_EXTENSIONS,
    GRAY_MODES,
    fit_square,
    image_header,
    image_pixels,
    is_image_name,
    list_image_files,
    nfc,
)
from sidda.datasets.imageset import MAX_IMAGE_SIZE
from sidda.datasets.layout import write_layout
from sidda.datasets.npyfiles import DataError
from sidda.errors import InputError
from sidda.generators._common import stratified_split
from sidda.runs import atomic_dir, check_new_folder

__all__ = ["import_image_folders"]

logger = logging.getLogger(__name__)


class _Folder(NamedTuple):
    root: Path
    names: list[str] | None  # class names (NFC), or None for a flat folder
    files: list[Path]
    labels: list[int]  # index into names, -1 when unlabelled


def _scan_folder(root: Path, what: str) -> _Folder:
    """The images of ``root``: class folders (read recursively) or images directly."""
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder not found")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    flat = sorted(p for p in root.iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_image_name(p))
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
                f"({ALL_EXTENSIONS}) per class"
            )
        return _Folder(root, None, flat, [-1] * len(flat))
    by_name: dict[str, Path] = {}
    for d in subdirs:
        name = nfc(d.name)
        if name in by_name:
            raise DataError(
                f"{root}: the class folders {by_name[name].name!r} and {d.name!r} have the same "
                "name in two Unicode forms (NFC and NFD); merge them into one folder"
            )
        by_name[name] = d
    names = sorted(by_name)
    files, labels = [], []
    for k, name in enumerate(names):
        images = list_image_files(by_name[name])
        if not images:
            raise DataError(
                f"{by_name[name]}: class folder holds no images ({ALL_EXTENSIONS}); add images "
                "or remove the folder"
            )
        files += images
        labels += [k] * len(images)
    return _Folder(root, names, files, labels)


def _relabel(folder: _Folder, names: list[str]) -> _Folder:
    """``folder``'s labels as indices into ``names`` (which holds every class of ``folder``)."""
    if folder.names is None:
        return folder
    index = [names.index(n) for n in folder.names]
    return folder._replace(labels=[index[k] for k in folder.labels])


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


def _fits_channels(files: list[Path], bands: list[int], channels: int | None) -> int:
    """The one band count of every FITS file."""
    first: dict[int, Path] = {}
    for p, c in zip(files, bands, strict=True):
        first.setdefault(c, p)
    if len(first) > 1:
        (a, pa), (b, pb) = list(first.items())[:2]
        raise DataError(
            f"the FITS files differ in band count: {pa} has {a}, {pb} has {b}; every cutout "
            "needs the same bands"
        )
    count = next(iter(first))
    if channels is not None and channels != count:
        raise InputError(
            f"channels={channels} applies to PNG/JPEG images; the FITS files have {count} "
            "band(s): leave channels unset"
        )
    return count


def _common_size(sizes: list[tuple[int, int]], fit: str, where: str) -> int:
    """The one output side the images give without resizing (``image_size`` None)."""
    # crop: every central square must have one side; stretch: every image one square size
    sides = {min(wh) if fit == "crop" else wh for wh in sizes}
    if len(sides) > 1 or (fit == "stretch" and len(set(next(iter(sides)))) > 1):
        examples = sorted({f"{w}x{h}" for w, h in sizes})
        raise DataError(f"{where}: the images differ in size or are not square (e.g. "
                        f"{', '.join(examples[:3])}); pass --image-size")
    side = next(iter(sides))
    size = side if isinstance(side, int) else side[0]
    if size < 8:
        raise DataError(f"{where}: images of {size}x{size} pixels are too small for the models "
                        "(at least 8x8); pass --image-size 8 or more")
    return size


def _warn_upsampling(files: list[Path], sizes: list[tuple[int, int]], size: int) -> None:
    """One warning for the images with a side below ``size`` (both fits resize them up)."""
    small = [(p, wh) for p, wh in zip(files, sizes, strict=True) if min(wh) < size]
    if small:
        p, (w, h) = small[0]
        logger.warning("%d image(s) smaller than %dx%d are upsampled (e.g. %s, %dx%d); "
                       "upsampling adds no detail", len(small), size, size, p, w, h)


def _split(labels: np.ndarray, seq: np.random.SeedSequence, *, test_fraction: float | None,
           where: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices; ``test_fraction`` None puts every image in train."""
    rng = np.random.default_rng(seq)
    if test_fraction is None:
        return rng.permutation(len(labels)), np.zeros(0, dtype=np.int64)
    try:
        return stratified_split(labels, rng, test_fraction=test_fraction, where=where)
    except InputError as e:
        raise DataError(str(e)) from None


def _check_options(image_size: int | None, test_fraction: float, fit: str,
                   channels: int | None) -> None:
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


def _scan_all(source: Path, target: Path, target_test: Path | None
              ) -> tuple[_Folder, _Folder, _Folder | None]:
    src = _scan_folder(source, "source")
    if src.names is None:
        raise DataError(
            f"{source}: the source folder must hold one sub-folder of images per class "
            "(its name is the class name); it holds images directly"
        )
    if len(src.names) < 2:
        raise DataError(
            f"{source}: only one class folder ({src.names[0]}); classification needs >= 2"
        )
    tgt = _scan_folder(target, "target")
    if tgt.names is not None and tgt.names != src.names:
        only_s = sorted(set(src.names) - set(tgt.names))
        only_t = sorted(set(tgt.names) - set(src.names))
        raise DataError(
            f"{target}: the class folders differ from the source's ({source}): only in source "
            f"{only_s}, only in target {only_t}; give both the same class folders, or make the "
            "target a flat folder of unlabelled images"
        )
    if target_test is None:
        return src, tgt, None
    test = _scan_folder(target_test, "target test")
    if test.names is None:
        raise DataError(f"{target_test}: the target test folder must hold one sub-folder of "
                        "images per class (the source's classes); it holds images directly")
    extra = sorted(set(test.names) - set(src.names))
    if extra:
        raise DataError(f"{target_test}: class folder(s) {extra} are not source classes "
                        f"({', '.join(src.names)}); rename or remove them")
    missing = sorted(set(src.names) - set(test.names))
    if missing:
        logger.warning("%s: no class folder for source class(es) %s; the target test set has "
                       "no images of them", target_test, missing)
    return src, tgt, _relabel(test, src.names)


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
    hdus: Sequence[str | int] | None = None,
    target_test: str | Path | None = None,
) -> Path:
    """Convert two folders of images into a data folder in the zenodo layout.

    Args:
        source: Folder with one sub-folder of images per class (labelled source domain).
        target: The same class sub-folders (labelled target, labels used for evaluation only),
            or a flat folder of images (unlabelled target).
        out: Output folder; must not exist or be empty. Written atomically.
        image_size: Side S of the square output images; None keeps the images' common size
            (an error if they differ). Smaller images are upsampled, with a warning.
        test_fraction: Fraction of each class (each domain) kept for testing, in (0, 1). With
            ``target_test`` it applies to the source only.
        random_state: Seed of the train/test split (an integer >= 0).
        fit: ``"crop"`` takes the central square of a non-square image; ``"stretch"``
            resizes it whole.
        channels: 1 or 3 (PNG/JPEG images); None gives 3 if any image is in colour, else 1.
            FITS cutouts take the band count from the files (leave it None).
        hdus: FITS only: the HDUs stacked as bands, by EXTNAME (``["G", "R", "Z"]``,
            case-insensitive) or index (``[1, 2, 3]``); None reads the first image HDU
            (:mod:`sidda.datasets.fits`). Recorded in the manifest as ``fits_hdus``.
        target_test: A folder with one sub-folder per class (source classes; a missing class
            is warned about): the labelled target test set. Every ``target`` image then goes
            to the target's training split.

    Returns:
        ``out``, holding the layout, ``manifest.json`` (with ``class_names`` and the target
        files' suffix ``_target``, which loading takes when the config names none) and
        ``index.csv`` (which file became which array row).

    Raises:
        DataError: an empty folder or class folder, an unreadable image (named), class folders
            that differ between source and target, a target test class that the source lacks,
            images too small for the models, FITS files mixed with other images, without
            image data, with different band counts, or without a named HDU.
    """
    _check_options(image_size, test_fraction, fit, channels)
    if isinstance(random_state, bool) or not isinstance(random_state, int) or random_state < 0:
        raise InputError(f"--seed must be an integer >= 0, got {random_state!r}")
    hdus = check_hdus(hdus)
    source, target, out = Path(source), Path(target), Path(out)
    test_root = None if target_test is None else Path(target_test)
    if check_new_folder(out).exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out")
    src, tgt, test = _scan_all(source, target, test_root)
    every = src.files + tgt.files + (test.files if test else [])

    use_fits = _is_fits_import(every)
    if use_fits:
        headers = [fits_bands(p, hdus=hdus) for p in every]
        channels = _fits_channels(every, [h.bands for h in headers], channels)
        sizes = [h.size for h in headers]
        left = [(p, h.left_out) for p, h in zip(every, headers, strict=True) if h.left_out]
        if left:
            logger.warning("%d FITS file(s) hold more image HDUs than the one read (e.g. %s: "
                           "%s left out); pass --bands or --hdu to stack them as bands",
                           len(left), left[0][0], ", ".join(left[0][1]))
    else:
        if hdus is not None:
            raise InputError("--bands/--hdu select HDUs of FITS files; these images are "
                             "PNG/JPEG-style files: leave them unset")
        modes = [image_header(p) for p in every]
        sizes = [wh for _, wh in modes]
        if channels is None:
            channels = 1 if all(mode in GRAY_MODES for mode, _ in modes) else 3
    if image_size is None:
        image_size = _common_size(sizes, fit, f"{source}, {target}")
    else:
        _warn_upsampling(every, sizes, image_size)

    seqs = np.random.SeedSequence(random_state).spawn(3)
    arrays: dict[str, np.ndarray] = {}
    rows = []
    nan_pixels, nan_files = 0, 0
    parts = [("s", "train", src), ("s", "test", src), ("t", "train", tgt),
             ("t", "test", tgt if test is None else test)]
    splits = {"s": _split(np.asarray(src.labels), seqs[0], test_fraction=test_fraction,
                          where=source),
              "t": _split(np.asarray(tgt.labels), seqs[1],
                          test_fraction=None if test else test_fraction, where=target)}
    if test is not None:
        splits["t"] = (splits["t"][0], np.random.default_rng(seqs[2]).permutation(
            len(test.files)))
    for dom, split, folder in parts:
        lab = np.asarray(folder.labels, dtype=np.int64)
        idx = splits[dom][0 if split == "train" else 1]
        x = np.empty((len(idx), image_size, image_size, channels), dtype=np.float32)
        for i, j in enumerate(idx):
            path = folder.files[j]
            if use_fits:
                pixels, n_nan = read_fits(path, hdus=hdus)
                nan_pixels, nan_files = nan_pixels + n_nan, nan_files + (n_nan > 0)
                x[i] = fit_square(pixels, size=image_size, fit=fit, clip=False)
            else:
                x[i] = image_pixels(path, channels=channels, size=image_size, fit=fit)
            rows.append({"domain": "source" if dom == "s" else "target", "split": split,
                         "index": i, "label": int(lab[j]) if lab[j] >= 0 else "",
                         "file": path.relative_to(folder.root).as_posix()})
        arrays[f"x_{split}_{dom}"] = x
        if folder.names is not None:
            arrays[f"y_{split}_{dom}"] = lab[idx]
    for dom, folder in (("s", src), ("t", tgt)):
        tr, te = splits[dom]
        logger.info("%s: %d images -> %d train%s", folder.root, len(folder.files), len(tr),
                    f", {len(te)} test" if dom == "s" or test is None else "")
    if test is not None:
        logger.info("%s: %d labelled target test images", test.root, len(test.files))

    manifest = {
        "generator": "image-folder", "source_folder": str(source.resolve()),
        "target_folder": str(target.resolve()), "class_names": src.names,
        "target_labelled": tgt.names is not None, "image_size": image_size,
        "channels": channels, "fit": fit, "resample": "bicubic",
        "test_fraction": test_fraction, "seed": random_state,
        "format": "fits" if use_fits else "image",
        "scale": ("FITS values kept as float32, NaN -> 0" if use_fits else
                  "8-bit / 255, 16-bit and 32-bit integer (0..65535) / 65535, float kept"),
        "target_test_folder": None if test is None else str(test.root.resolve()),
    }
    if use_fits:
        manifest["fits_hdus"] = None if hdus is None else list(hdus)
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
