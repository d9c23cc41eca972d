"""The images an evaluation reads, and the folder each set comes from.

:func:`evaluation_data` gathers, for :func:`~sidda.experiments.evaluate_run`:

* ``test_t``: the target **test** images of the folder evaluated (the run's own data folder, or
  ``--data OTHER``); the one set that must be there;
* ``test_s``: the source test images of that folder; for another folder that holds none (a
  labelled target test set on its own), those of the run's own data folder, else None;
* ``val``: the run's own train/validation split rebuilt exactly as training made it
  (:func:`~sidda.experiments.data.split_train`, the recorded split size checked), with the
  target validation labels dropped. Temperature scaling, checkpoint selection and the source
  side of the label-free diagnostics read it. For another folder it comes from the run's own
  data folder while that is still there with the split the run was trained with, else from the
  other folder's training images when they rebuild that split, else None;
* ``source_class_counts``: the source training images per class (``run.json``; counted from the
  rebuilt split for runs of an older sidda), the collapse flag's reference.

Whatever another folder cannot give is left out with a sentence in ``notes``, never an error:
evaluating a target test set on its own must work. The run's own data is strict: a data folder
that changed since training is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from sidda.config import RunConfig
from sidda.datasets import DataConfig, DataError, ImageSet, layout_paths, load_domains, load_split
from sidda.experiments.data import source_class_counts, split_train
from sidda.runs import RunInfo

__all__ = ["EvaluationData", "evaluation_data"]


class EvaluationData(NamedTuple):
    """What an evaluation reads (module docstring)."""

    test_t: ImageSet  #: target test images
    test_s: ImageSet | None  #: source test images, or None
    val: dict[str, ImageSet] | None  #: ``val_s``, ``val_t`` (unlabelled), or None
    source_class_counts: list[int] | None  #: (K,) source training images per class
    folders: dict[str, str | None]  #: ``target_test``, ``source_test``, ``validation``
    notes: list[str]  #: what was left out or taken from elsewhere, and why


def evaluation_data(
    cfg: RunConfig, info: RunInfo, *, own: DataConfig, other: DataConfig | None = None,
    validation: bool = True,
) -> EvaluationData:
    """The test sets of ``other`` (None: the run's own data ``own``) and the run's validation
    split (module docstring: where each comes from).

    Args:
        cfg: The run's config (its seed and ``data.val_fraction`` rebuild the split).
        info: The run's ``run.json``.
        own: How to load the run's own data folder.
        other: How to load the folder evaluated, when it is not the run's own.
        validation: Rebuild the validation split (False: ``val`` is None, and the class counts
            come from ``run.json`` only).

    Raises:
        DataError: the run's own data is unusable or changed since training, or ``other``
            holds no target test images or images of another shape than the model takes.
    """
    notes: list[str] = []
    if other is None:
        data = load_domains(own, splits=("test",))
        test_s, test_t, folder_s = data.test_s, data.test_t, own.path
        val = _run_split(cfg, info, own) if validation else None
        folder_v = own.path if val is not None else None
    else:
        test_t, test_s = _other_tests(other)
        folder_s = other.path if test_s is not None else None
        if test_s is None:
            test_s, folder_s = _own_source_test(own, other, notes)
        val, folder_v = (_validation_elsewhere(cfg, info, own, other, notes) if validation
                         else (None, None))
    _check_images(info, test_t, test_s)
    counts = None if info.source_class_counts is None else list(info.source_class_counts)
    if counts is None and val is not None:
        counts = source_class_counts(val["train_s"], info.num_classes)
    elif counts is None and validation:
        notes.append("label-free diagnostics left out: this run's run.json does not record its "
                     "source class counts (an older sidda) and its training split could not be "
                     "rebuilt")
    if val is not None:
        val = {"val_s": val["val_s"], "val_t": ImageSet(val["val_t"].x, None, val["val_t"].name)}
    folders = {"target_test": _resolved(other.path if other is not None else own.path),
               "source_test": _resolved(folder_s), "validation": _resolved(folder_v)}
    return EvaluationData(test_t, test_s, val, counts, folders, notes)


def _resolved(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _other_tests(dcfg: DataConfig) -> tuple[ImageSet, ImageSet | None]:
    """The target test set of another folder, and its source test set when it has one."""
    root = Path(dcfg.path)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    paths = layout_paths(root, layout=dcfg.layout, source_suffix=dcfg.source_suffix,
                         target_suffix=dcfg.target_suffix)
    x_t, y_t = paths["test_t"]
    if not os.path.lexists(x_t):
        raise DataError(
            f"{x_t}: file not found; `evaluate --data` needs at least the target test images "
            f"there (labels beside them in {y_t.name}, optional; data.layout {dcfg.layout!r}, "
            "the target suffix that the folder's manifest.json records, else the run's)")
    if os.path.lexists(paths["test_s"][0]):
        data = load_domains(dcfg, splits=("test",))
        return data.test_t, data.test_s
    kw = dict(normalize=dcfg.normalize, image_size=dcfg.image_size,
              memory_budget_mb=dcfg.memory_budget_mb, channels_first=dcfg.channels_first)
    return load_split(x_t, y_t, require_labels=False, **kw), None


def _own_source_test(own: DataConfig, other: DataConfig, notes: list[str]
                     ) -> tuple[ImageSet | None, str | None]:
    """The run's own source test set for another folder that has none (or None, noted)."""
    if Path(own.path).is_dir():
        try:
            test_s = load_domains(own, splits=("test",)).test_s
        except DataError as e:
            notes.append(f"source test metrics left out: {other.path} holds no source test "
                         f"images and the run's own data folder no longer loads ({e})")
            return None, None
        notes.append(f"source test metrics are of the run's own data folder {own.path} "
                     f"({other.path} holds no source test images)")
        return test_s, own.path
    notes.append(f"source test metrics left out: {other.path} holds no source test images and "
                 f"the run's own data folder {own.path} is gone")
    return None, None


def _run_split(cfg: RunConfig, info: RunInfo, dcfg: DataConfig) -> dict[str, ImageSet]:
    """The run's four splits rebuilt from ``dcfg``'s training images, size checked."""
    data = load_domains(dcfg, splits=("train",))
    sets = split_train(data, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed)
    for key in ("val_s", "train_s"):
        expected = info.sizes.get(key)
        if expected is not None and expected != len(sets[key]):
            raise DataError(
                f"{dcfg.path}: the rebuilt source {'validation' if key == 'val_s' else 'training'}"
                f" split has {len(sets[key])} images but the run was trained with {expected}: "
                "the training images changed since; restore the data the run was trained on")
    return sets


def _validation_elsewhere(cfg: RunConfig, info: RunInfo, own: DataConfig, other: DataConfig,
                          notes: list[str]) -> tuple[dict | None, str | None]:
    """For another folder: the run's split from its own data folder, else from ``other``'s
    training images, else None (each failure noted)."""
    why = []
    if Path(own.path).is_dir():
        try:
            sets = _run_split(cfg, info, own)
            notes.append(f"temperature scaling, checkpoint selection and the label-free "
                         f"diagnostics read the run's source validation split from its own data "
                         f"folder {own.path}")
            return sets, own.path
        except DataError as e:
            why.append(f"its own data folder no longer gives it ({e})")
    else:
        why.append(f"its own data folder {own.path} is gone")
    x_s = layout_paths(other.path, layout=other.layout, source_suffix=other.source_suffix,
                       target_suffix=other.target_suffix)["train_s"][0]
    if os.path.lexists(x_s):
        try:
            sets = _run_split(cfg, info, other)
            notes.append(f"the run's source validation split was rebuilt from the training "
                         f"images of {other.path} ({why[0]})")
            return sets, other.path
        except DataError as e:
            why.append(f"{other.path}'s training images do not rebuild it ({e})")
    else:
        why.append(f"{other.path} holds no training images")
    notes.append("temperature scaling, checkpoint selection and the source side of the "
                 "label-free diagnostics left out: they need the run's source validation split, "
                 "and " + "; ".join(why))
    return None, None


def _check_images(info: RunInfo, test_t: ImageSet, test_s: ImageSet | None) -> None:
    shape = (info.in_channels, info.image_size, info.image_size)
    for images in (test_t, test_s):
        if images is None:
            continue
        if tuple(images.shape) != shape:
            raise DataError(f"{images.name}: images of shape {tuple(images.shape)} but the model "
                            f"was trained on {shape}; prepare them as the run's data (same "
                            "bands, data.image_size)")
        if images.y is not None and len(images.y) and int(images.y.max()) >= info.num_classes:
            raise DataError(
                f"{images.name}: label {int(images.y.max())} is outside the model's classes "
                f"0..{info.num_classes - 1}; evaluate on data with the run's "
                f"{info.num_classes} classes"
            )
