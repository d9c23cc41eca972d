"""What ``sidda train`` says before epoch 1: choices in the config that waste a run.

:func:`start_warnings` returns one line per problem; ``sidda train`` logs each as a warning
(rank 0 only) before training starts, and ``sidda sweep`` and ``sidda compare`` log those of
their planned runs once per data set (:func:`plan_warnings`). None of them stops a run:

* **schedule**: a warm-up longer than :data:`WARMUP_SHARE` of the epochs, for a method that
  aligns the domains (``train.warmup`` equal to or past ``train.epochs`` is refused by the
  config itself), a ``train.milestones`` entry at or past the last epoch (that decay never
  happens; the default milestones, half and four fifths of the epochs, are left alone);
* **resizing**: ``data.image_size`` that resizes the stored images (from what size to what,
  and by which factor);
* **where the run goes** (``sidda train`` only): an ``out_dir`` other than ``runs``, the folder
  the README's next commands name: the warning gives the exact next command instead;
* **normalisation**: the data layer's check of the training images after ``data.normalize``
  (:func:`~sidda.datasets.check_normalisation`), e.g. a noise-free source stretched differently
  from a noisy target under ``asinh``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sidda.config import RunConfig
from sidda.datasets import check_normalisation, layout_paths
from sidda.datasets.imageset import open_images
from sidda.errors import InputError

__all__ = ["DEFAULT_OUT_DIR", "WARMUP_SHARE", "plan_warnings", "start_warnings"]

logger = logging.getLogger(__name__)

#: A warm-up longer than this share of the epochs leaves too little alignment.
WARMUP_SHARE = 0.8
#: The ``out_dir`` the documentation's next commands assume (``sidda evaluate runs/NAME``).
DEFAULT_OUT_DIR = "runs"


def _schedule(cfg: RunConfig) -> list[str]:
    t, out = cfg.train, []
    align = t.epochs - t.warmup
    if cfg.loss.method != "source_only" and t.warmup > WARMUP_SHARE * t.epochs:
        out.append(f"train.warmup={t.warmup} leaves {align} of {t.epochs} epoch(s) to align the "
                   "domains; lower train.warmup or raise train.epochs")
    late = [m for m in t.milestones or () if m >= t.epochs]
    if late:
        out.append(f"train.milestones {late} at or past the last epoch ({t.epochs}): the "
                   "learning rate never drops there; set milestones below train.epochs (or "
                   "null: half and four fifths of the epochs)")
    return out


def _resizing(cfg: RunConfig) -> list[str]:
    size = cfg.data.image_size
    if size is None:
        return []
    d = cfg.data
    paths = layout_paths(d.path, layout=d.layout, source_suffix=d.source_suffix,
                         target_suffix=d.target_suffix)
    out = []
    for domain, key in (("source", "train_s"), ("target", "train_t")):
        path = paths[key][0]
        h, w = open_images(path, d.channels_first).shape[2:]  # as training reads it
        if (h, w) != (size, size):
            factor = size / max(h, w)
            how = "up" if factor > 1 else "down"
            out.append(f"data.image_size={size} resizes the {domain} images from {h}x{w} to "
                       f"{size}x{size} ({how} by {factor:.3g}x); set data.image_size: null to "
                       "train at the stored size")
    return out


def _out_dir(cfg: RunConfig) -> list[str]:
    if Path(cfg.out_dir).resolve() == Path(DEFAULT_OUT_DIR).resolve():  # runs/, from here
        return []
    return [f"out_dir is {cfg.out_dir!r}, not {DEFAULT_OUT_DIR!r}: the run goes to "
            f"{cfg.run_dir}, so evaluate it with `sidda evaluate {cfg.run_dir}` (not "
            f"{DEFAULT_OUT_DIR}/{cfg.name})"]


def _normalisation(cfg: RunConfig) -> list[str]:
    report = check_normalisation(cfg.data)
    return [f"data.normalize={report.mode}: {w}" for w in report.warnings]


def _data_warnings(cfg: RunConfig) -> list[str]:
    """Resizing and normalisation; none for data that does not load (training says why)."""
    try:
        return _resizing(cfg) + _normalisation(cfg)
    except (InputError, OSError, ValueError):
        return []


def start_warnings(cfg: RunConfig) -> list[str]:
    """The module's warnings for a run of ``cfg`` (one line each)."""
    return _schedule(cfg) + _out_dir(cfg) + _data_warnings(cfg)


def plan_warnings(plan: Sequence[RunConfig]) -> list[str]:
    """The warnings of runs a sweep or comparison planned on one data set, each line once: the
    schedule of every run, the data's once (the first run's ``data`` section), no ``out_dir``
    rule (the command chose the runs' folders)."""
    if not plan:
        return []
    lines = [line for cfg in plan for line in _schedule(cfg)] + _data_warnings(plan[0])
    return list(dict.fromkeys(lines))
