r"""A first config sized to a data folder: ``sidda config new --data DIR`` and
``sidda train --data DIR``.

The folder is checked as ``sidda data check`` checks it (every file loaded), and the config is
sized from what it holds, by these rules of thumb:

* **image size**: the data's own (``data.image_size: null``: nothing is resized);
* **batch size** :math:`B`: the largest power of two up to 128 that is at most a quarter of the
  smaller training set after the validation split (at least 2), so that an epoch has at least
  four steps;
* **epochs** :math:`E`: enough for about :data:`TARGET_STEPS` optimisation steps,
  :math:`E = \mathrm{clip}(\lceil 3000 / \lceil N_s / B \rceil \rceil, 10, 60)` with
  :math:`N_s` source training images (the paper trains its shapes for 50 epochs of 94 steps);
* **warm-up**: a quarter of the epochs (at least 1), cross-entropy only, so that the source
  classifier is settled before the domains are aligned;
* **milestones**: ``null``, which puts them at half and four fifths of the epochs (the
  authors' proportions), inside the run whatever ``train.epochs`` becomes;
* **normalisation**: ``half`` (the paper's :math:`(x - 0.5) / 0.5`) for pixels in [0, 1]
  (``import-folder`` of PNG/JPEG, the generators), ``per_band_standard`` otherwise (FITS
  fluxes, other units), which scales each band of each image by its own mean and spread;
* ``out_dir: runs`` and ``name``: the data folder's name, so that the run is
  ``runs/<name>``, where ``sidda evaluate`` and ``sidda report`` are pointed next.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import yaml

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataSummary, check_data, resolve_data_config
from sidda.errors import InputError

__all__ = ["MODELS", "TARGET_STEPS", "Starter", "starter_config"]

#: Optimisation steps a starter config aims at (see the module docstring).
TARGET_STEPS = 3000
#: Models ``sidda config new --model`` offers: the plain CNN and the D4-equivariant CNN.
MODELS = ("cnn", "d4")
_MIN_EPOCHS, _MAX_EPOCHS, _MAX_BATCH = 10, 60, 128


class Starter(NamedTuple):
    """A starter config: its commented YAML text and the config it loads as."""

    text: str
    cfg: RunConfig


def _batch_size(n_smallest: int) -> int:
    """The largest power of two <= 128 and <= n / 4 (at least 2).

    >>> _batch_size(10_000), _batch_size(100), _batch_size(5)
    (128, 16, 2)
    """
    return max(2, min(_MAX_BATCH, 2 ** int(math.log2(max(1, n_smallest // 4)))))


def _epochs(n_train_s: int, batch_size: int) -> int:
    """About :data:`TARGET_STEPS` steps, clipped to 10..60 epochs.

    >>> _epochs(12_000, 128), _epochs(1_000, 128), _epochs(200_000, 128)
    (32, 60, 10)
    """
    steps = math.ceil(n_train_s / batch_size)
    return min(_MAX_EPOCHS, max(_MIN_EPOCHS, math.ceil(TARGET_STEPS / steps)))


def _normalize(summary: DataSummary) -> tuple[str, str]:
    """(``data.normalize``, why) from the pixel range of the training files."""
    train = [f for f in summary.files if f.key.startswith("train")]
    lo, hi = min(f.min for f in train), max(f.max for f in train)
    if lo >= 0.0 and hi <= 1.0:
        return "half", f"pixels lie in [{lo:.3g}, {hi:.3g}], within [0, 1]: the paper's scaling"
    return "per_band_standard", (f"pixels span [{lo:.3g}, {hi:.3g}], not [0, 1]: each band of "
                                 "each image is scaled by its own mean and spread")


def starter_config(data: str | Path, *, model: str = "cnn", name: str | None = None
                   ) -> Starter:
    """A commented starter config for the data folder ``data`` (module docstring).

    Args:
        data: A data folder (``sidda data import-folder`` or ``data make`` output, or the
            paper's layouts).
        model: ``cnn`` or ``d4``.
        name: The run name; default the folder's name.

    Raises:
        DataError: the folder is not valid data (as ``sidda data check`` says).
        InputError: an unknown model.
    """
    if model not in MODELS:
        raise InputError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    root = Path(data)
    summary = check_data(resolve_data_config(root))
    cfg = summary.cfg
    counts = {f.key: f.n for f in summary.files}
    val = cfg.val_fraction
    n_s, n_t = (counts[k] - math.floor(counts[k] * val) for k in ("train_s", "train_t"))
    batch = _batch_size(min(n_s, n_t))
    epochs = _epochs(n_s, batch)
    warmup = max(1, epochs // 4)
    per_epoch = math.ceil(n_s / batch)
    normalize, why = _normalize(summary)
    c, h, w = summary.model_shape
    run_name = name or "".join(ch if ch.isalnum() or ch in "-_." else "_"
                               for ch in root.resolve().name) or "run"
    suffixes = (f"  source_suffix: {cfg.source_suffix!r}\n  target_suffix: {cfg.target_suffix!r}\n"
                if cfg.layout == "zenodo" else "")
    text = f"""\
# Starter config for {root} (written by `sidda config new`): {n_s} source and {n_t} target
# training images of {c}x{h}x{w}, {summary.num_classes} classes, after a validation split of {val}.
# Every key and its default: docs/config.md. Train with  sidda train --config THIS_FILE
name: {run_name}
out_dir: runs          # the run is runs/{run_name}: `sidda evaluate runs/{run_name}` next
data:
  path: {str(root)!r}
  layout: {cfg.layout}
{suffixes}  val_fraction: {val}     # held out of each domain's training images, for selection
  image_size: null      # the data's own size, {h}x{w}: nothing is resized
  normalize: {normalize}   # {why}
model:
  name: {model}            # cnn: the plain CNN; d4: rotation- and flip-equivariant (escnn)
loss:
  method: sidda         # robust SIDDA; source_only trains the baseline to compare with
train:
  epochs: {epochs}  # about {TARGET_STEPS} steps of {batch} images ({per_epoch} per epoch)
  warmup: {warmup}  # epochs of cross-entropy only before the domains are aligned
  milestones: null  # the learning rate drops 10x after half and 4/5 of the epochs: MILESTONES
  batch_size: {batch}  # images per domain per step (at most a quarter of the smaller set)
  seed: 0
  device: auto          # a GPU when there is one
  log: [csv]            # history.csv every epoch; add tensorboard for RUN/tensorboard/
"""
    try:
        loaded = RunConfig.from_dict(yaml.safe_load(text))
    except ConfigError as e:  # a bug in the template: say so plainly
        raise RuntimeError(f"the starter config does not load: {e}") from None
    text = text.replace("MILESTONES", str(loaded.train.resolved_milestones()), 1)  # null's
    return Starter(text, loaded)
