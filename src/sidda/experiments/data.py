"""The data of a run: the train/validation split, checksums of the files, generated sets.

:func:`prepare_data` splits each domain's ``train`` images into train and validation with the
run's seed (source: ``train.seed``, target: ``train.seed + 1``; :func:`split_train`, which
evaluation calls to rebuild the split); :func:`data_checksums` records
the size and SHA-256 of every training file in ``environment.json``, so that a resumed run can
refuse data that changed (:func:`check_same_data`) and a finished one is not reused on other
data (:func:`changed_data`; a sweep hashes each data folder once, :class:`DataChecksums`).
:func:`write_generated` writes a
:func:`~sidda.generators.make_dataset` result as a data folder, all or nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from sidda.config import ConfigError, RunConfig
from sidda.datasets import (
    DataError,
    DomainData,
    ImageSet,
    file_checksum,
    layout_paths,
    load_domains,
    split_indices,
    write_layout,
)
from sidda.errors import short_repr
from sidda.generators import DomainSplits
from sidda.runs import DamagedFileError, RunDir, atomic_dir

__all__ = ["DataChecksums", "changed_data", "check_same_data", "class_names", "data_checksums",
           "prepare_data", "source_class_counts", "split_train", "write_generated"]

logger = logging.getLogger(__name__)

#: The arrays of a generated data set, as :func:`~sidda.datasets.write_layout` takes them.
_SPLIT_ARRAYS = ("x_train_s", "y_train_s", "x_test_s", "y_test_s",
                 "x_train_t", "y_train_t", "x_test_t", "y_test_t")


def _check_fits(cfg: RunConfig, data: DomainData, n_train_s: int) -> None:
    if cfg.data.num_classes is not None and cfg.data.num_classes != data.num_classes:
        raise ConfigError(
            f"data.num_classes is {cfg.data.num_classes} but the labels hold {data.num_classes} "
            "classes; fix data.num_classes or the labels"
        )
    if cfg.train.batch_size > n_train_s:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is larger than the {n_train_s} source "
            "training images (after the validation split); lower train.batch_size"
        )


def prepare_data(cfg: RunConfig) -> tuple[DomainData, dict]:
    """Load the training data and split each domain into train/validation.

    Returns:
        The loaded data and a dict of the four :class:`~sidda.datasets.ImageSet` splits
        (``train_s``, ``val_s``, ``train_t``, ``val_t``).

    Raises:
        DataError: unusable data; ConfigError: a training setting the data cannot meet
            (``train.batch_size``, ``data.num_classes``).
    """
    data = load_domains(cfg.data, splits=("train",))
    sets = split_train(data, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed)
    _check_fits(cfg, data, len(sets["train_s"]))
    return data, sets


def split_train(data: DomainData, *, val_fraction: float, seed: int) -> dict[str, ImageSet]:
    """The four train/validation splits of ``data``'s training images, as training makes
    them (source: ``seed``, target: ``seed + 1``); evaluation rebuilds them with this."""
    tr_s, va_s = split_indices(len(data.train_s), val_fraction, seed=seed)
    tr_t, va_t = split_indices(len(data.train_t), val_fraction, seed=seed + 1)
    return {
        "train_s": data.train_s.subset(tr_s),
        "val_s": data.train_s.subset(va_s),
        "train_t": data.train_t.subset(tr_t),
        "val_t": data.train_t.subset(va_t),
    }


def source_class_counts(images: ImageSet, num_classes: int) -> list[int]:
    """Images per class of a labelled set (``run.json`` records the source training split's).

    >>> import torch
    >>> source_class_counts(ImageSet(torch.zeros(3, 1, 8, 8), torch.tensor([0, 2, 2]), "s"), 4)
    [1, 0, 2, 0]
    """
    if images.y is None:
        raise DataError(f"{images.name}: no labels to count")
    return torch.bincount(images.y, minlength=num_classes).tolist()


def data_checksums(cfg: RunConfig) -> dict[str, dict]:
    """Size and SHA-256 of every training file a run reads, keyed by path in the data folder."""
    root = Path(cfg.data.path)
    paths = layout_paths(root, layout=cfg.data.layout, source_suffix=cfg.data.source_suffix,
                         target_suffix=cfg.data.target_suffix)
    files = [p for key in ("train_s", "train_t") for p in paths[key] if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    if total > 2**30:
        logger.info("computing the SHA-256 of %.1f GB of training data (recorded in "
                    "environment.json)", total / 2**30)
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size,
                                             "sha256": file_checksum(p)} for p in files}


class DataChecksums:
    """:func:`data_checksums` of each data folder, computed the first time a run asks for it
    (the runs of a sweep or comparison share their data folders)."""

    def __init__(self) -> None:
        self._by_folder: dict[tuple, dict[str, dict]] = {}

    def __call__(self, cfg: RunConfig) -> dict[str, dict]:
        d = cfg.data
        key = (str(Path(d.path).resolve()), d.layout, d.source_suffix, d.target_suffix)
        if key not in self._by_folder:
            self._by_folder[key] = data_checksums(cfg)
        return self._by_folder[key]


def changed_data(run: RunDir, cfg: RunConfig, *, now: dict | None = None,
                 quiet: bool = False) -> list[str] | None:
    """The training files that differ from those ``run`` recorded in ``environment.json``.

    Args:
        run: The run directory.
        cfg: The config whose data is checked.
        now: :func:`data_checksums` of ``cfg``, when already computed.
        quiet: No warning when nothing can be checked.

    Returns:
        The changed files (paths in the data folder), ``[]`` when none changed, or None when
        the run records no checksums (a warning says so: nothing can be checked).
    """
    try:
        recorded = (run.environment() or {}).get("data_files")
    except DamagedFileError as e:
        if not quiet:
            logger.warning("%s; cannot check that the data is unchanged", e)
        return None
    if not recorded or not isinstance(recorded, dict):
        if not quiet:
            logger.warning("%s records no data checksums; cannot check that the data is "
                           "unchanged", run.path)
        return None
    now = data_checksums(cfg) if now is None else now
    return sorted(f for f in set(recorded) | set(now) if recorded.get(f) != now.get(f))


def check_same_data(run: RunDir, cfg: RunConfig, *, now: dict | None = None) -> None:
    """Refuse to resume on training files that differ from those the run started with."""
    changed = changed_data(run, cfg, now=now)
    if changed:
        raise DataError(
            f"{cfg.data.path}: {', '.join(changed)} changed since the run started (SHA-256 "
            "differs from environment.json); restore the original data, or start a new run"
        )


def class_names(data: DomainData) -> list | None:
    """The manifest's class names, when there is one per class."""
    names = data.manifest.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != data.num_classes):
        logger.warning("the data's manifest.json names %s classes but the labels hold %d; "
                       "classes are shown by number", short_repr(names), data.num_classes)
        return None
    return names


def write_generated(out: str | Path, splits: DomainSplits, *, target_suffix: str) -> Path:
    """Write a generated data set into ``out`` (Zenodo layout) through a staging folder.

    ``out`` appears complete or not at all (:func:`~sidda.runs.atomic_dir`).
    """
    out = Path(out)
    arrays = {k: getattr(splits, k) for k in _SPLIT_ARRAYS}
    manifest = dict(splits.params, class_names=list(splits.class_names))
    with atomic_dir(out) as tmp:
        write_layout(tmp, arrays, target_suffix=target_suffix, manifest=manifest)
    return out
