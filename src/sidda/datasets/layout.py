"""Data folders on disk: where the files are, how they are loaded, how they are written.

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

Arrays are opened memory-mapped. A file whose float32 NCHW tensor fits in
``DataConfig.memory_budget_mb`` is converted once into memory; a larger one (Galaxy Zoo Evo's
7.7 GB float64 files) stays memory-mapped (:mod:`sidda.datasets.imageset`). Target labels are
never needed for training; evaluation uses them when present.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sidda.datasets.imageset import MAX_IMAGE_SIZE, DomainData, ImageSet, load_split
from sidda.datasets.normalize import NORMALIZATIONS
from sidda.datasets.npyfiles import DataError, _check_labels, _open_npy, file_checksum
from sidda.errors import short_repr
from sidda.runs import atomic_write

__all__ = ["DEFAULT_TARGET_SUFFIX", "LAYOUTS", "DataConfig", "check_class_names",
           "detect_layout", "layout_paths", "load_domains", "read_manifest",
           "resolve_target_suffix", "write_layout", "write_manifest", "zenodo_suffixes"]

LAYOUTS = ("zenodo", "mrssc2")
#: Target suffix of a folder whose config and manifest name none (the paper's Zenodo sets).
DEFAULT_TARGET_SUFFIX = "_noise"


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is read.

    Attributes:
        path: Data folder in one of the layouts of docs/data.md (`zenodo` or `mrssc2`).
        layout: ``"zenodo"`` (``train/``, ``test/`` with file suffixes) or ``"mrssc2"`` (flat
            ``source_X_train.npy`` ... files; the suffixes are ignored).
        target_suffix: Suffix of the target domain files (``_noise``, ``_PSF``, ``_desi``,
            ``_target``), or None (the default): the ``target_suffix`` that the folder's
            ``manifest.json`` records (``sidda data make`` and ``sidda data import-folder``
            write one), else ``_noise`` (the paper's Zenodo folders have no manifest).
        source_suffix: Suffix of the source files (empty for the paper's sets, ``_sdss`` for GZ).
        val_fraction: Fraction of each domain's training set held out for validation.
        image_size: Resize images to this size (bilinear, 8 to :data:`MAX_IMAGE_SIZE`), or None
            to keep them.
        normalize: How each image is normalised, per band (:func:`sidda.datasets.normalize_bands`):
            ``"half"`` maps x to (x - 0.5)/0.5 as the paper (the default); ``"none"`` keeps
            x; ``"per_band_standard"``, ``"per_band_minmax"`` and ``"asinh"`` scale each band
            of each image by its own statistics.
        num_classes: Number of classes, or None to infer it (1 + the largest label of all label
            files); set it when classes in 0..K-1 have no image in any split.
        memory_budget_mb: Largest float32 image tensor, in MB, that one file may occupy in
            memory. A file that would convert to more stays memory-mapped and is converted per
            batch (slower: each batch is read from disk, or the page cache, and resized again).
            0 keeps every file memory-mapped.
        channels_first: Whether 4-D image files are NCHW (True) or NHWC (False); None (the
            default) tells them apart: the reading that gives square images wins, NHWC when
            both do, else the shorter of the two candidate axes holds the channels.
    """

    path: str = "data/shapes"
    layout: str = "zenodo"
    target_suffix: str | None = None
    source_suffix: str = ""
    val_fraction: float = 0.2
    image_size: int | None = None
    normalize: str = "half"
    num_classes: int | None = None
    memory_budget_mb: int = 2048
    channels_first: bool | None = None

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
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"data.normalize must be one of {', '.join(NORMALIZATIONS)}; got "
                             f"{self.normalize!r}")
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


def resolve_target_suffix(root: str | Path, target_suffix: str | None = None) -> str:
    """``target_suffix`` when given, else the one ``root/manifest.json`` records, else
    ``"_noise"`` (:data:`DEFAULT_TARGET_SUFFIX`, the paper's sets, which have no manifest).

    A damaged manifest counts as none here; :func:`load_domains` reports it.

    >>> resolve_target_suffix("no/such/folder")
    '_noise'
    """
    if target_suffix is not None:
        return target_suffix
    try:
        recorded = read_manifest(Path(root)).get("target_suffix")
    except DataError:
        recorded = None
    return recorded if isinstance(recorded, str) else DEFAULT_TARGET_SUFFIX


def layout_paths(
    root: str | Path, *, layout: str = "zenodo", source_suffix: str = "",
    target_suffix: str | None = None,
) -> dict[str, tuple[Path, Path]]:
    """Image and label file of ``train_s``, ``train_t``, ``test_s`` and ``test_t``.

    ``target_suffix`` None takes the folder's recorded one (:func:`resolve_target_suffix`).

    >>> layout_paths("d", layout="mrssc2")["train_t"]
    (PosixPath('d/target_X_train.npy'), PosixPath('d/target_y_train.npy'))
    >>> layout_paths("d")["test_t"]
    (PosixPath('d/test/x_test_noise.npy'), PosixPath('d/test/y_test_noise.npy'))
    """
    root = Path(root)
    if layout != "mrssc2":
        target_suffix = resolve_target_suffix(root, target_suffix)
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


def _missing_file(path: Path, root: Path, cfg: DataConfig, *, suffix_unset: bool) -> DataError:
    found = detect_layout(root)
    if found is not None and found != cfg.layout:
        hint = f"the folder holds the {found!r} layout; set data.layout: {found}"
    elif found == "zenodo":
        hint = (f"the folder has x_train files with suffixes {zenodo_suffixes(root)}; set "
                "data.source_suffix and data.target_suffix to two of them")
        if suffix_unset:
            hint += (f" (data.target_suffix is not set, so {cfg.target_suffix!r} was used: "
                     + ("the one manifest.json records)" if (root / "manifest.json").is_file()
                        else "the default without a manifest.json)"))
    else:
        hint = f"expected the {cfg.layout!r} layout of docs/data.md"
    return DataError(f"{path}: file not found; {hint}")


def read_manifest(root: str | Path) -> dict:
    """``root/manifest.json`` as a dict, or ``{}`` when the folder has none.

    Raises:
        DataError: a manifest that is not a JSON object.
    """
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError, RecursionError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); fix or delete it") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: must hold a JSON object, got {type(manifest).__name__}")
    return manifest


def _describe_folder(root: Path, cfg: DataConfig, sets: dict[str, ImageSet | None]) -> dict:
    """A minimal manifest for a folder that has no ``manifest.json``."""
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
    suffix_unset = cfg.target_suffix is None
    if suffix_unset and cfg.layout == "zenodo":
        try:
            cfg = replace(cfg, target_suffix=resolve_target_suffix(root))
        except ValueError as e:  # the recorded target suffix is the source's
            raise DataError(f"{root / 'manifest.json'}: {e}") from None
    kw = dict(normalize=cfg.normalize, image_size=cfg.image_size, num_classes=cfg.num_classes,
              memory_budget_mb=cfg.memory_budget_mb, channels_first=cfg.channels_first)
    paths = layout_paths(root, layout=cfg.layout, source_suffix=cfg.source_suffix,
                         target_suffix=cfg.target_suffix)
    sets: dict[str, ImageSet | None] = {}
    for key, (x_path, y_path) in paths.items():
        if key.split("_")[0] not in splits:
            sets[key] = None
            continue
        if not os.path.lexists(x_path):
            raise _missing_file(x_path, root, cfg, suffix_unset=suffix_unset)
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
    manifest = read_manifest(root)
    check_class_names(manifest.get("class_names"), num_classes, where=root / "manifest.json")
    return DomainData(
        train_s=sets["train_s"], train_t=sets["train_t"], test_s=sets["test_s"],
        test_t=sets["test_t"], num_classes=num_classes,
        manifest=manifest or _describe_folder(root, cfg, sets),
    )  # type: ignore[arg-type]


def check_class_names(names: object, num_classes: int, *, where: object) -> list[str] | None:
    """``names`` when it is K distinct strings (or None, no names); else a :class:`DataError`.

    >>> check_class_names(["cat", "dog"], 2, where="manifest.json")
    ['cat', 'dog']
    """
    if names is None:
        return None
    fix = "; fix it or remove the key"
    if not isinstance(names, list):
        raise DataError(f"{where}: class_names must be a list of {num_classes} strings (one per "
                        f"class, label k is the k-th), got {short_repr(names)} "
                        f"({type(names).__name__}){fix}")
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        bad = wrong[0]
        raise DataError(f"{where}: class_names must hold strings, got {short_repr(bad)} "
                        f"({type(bad).__name__}){fix}")
    if len(names) != num_classes:
        raise DataError(f"{where}: class_names has {len(names)} name(s) but the labels hold "
                        f"{num_classes} classes{fix}")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{where}: class_names names {twice!r} twice; each class needs its own "
                        f"name{fix}")
    return list(names)


class _Chunked:
    """A file seen by :func:`numpy.save` as a plain stream, so the array is written with
    ``write`` calls (a full disk then raises ``ENOSPC``, where ``ndarray.tofile`` raises an
    OSError without an errno)."""

    def __init__(self, f: Any) -> None:
        self.write = f.write


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(_Chunked(f), arr))


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
