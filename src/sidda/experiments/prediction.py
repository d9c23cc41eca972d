"""Predict new images with a trained run: ``sidda predict RUN IMAGES --out preds.csv``.

The images go through what the run's own images went through, so a prediction sees the same
pixels a test image would:

1. **Reading.** A ``.npy`` file holds images as the training files do (NHW, NHWC or NCHW;
   ``data.channels_first`` of the run decides ambiguous shapes). Image files (PNG, JPEG, TIFF,
   ... and FITS cutouts, alone or in a folder, whose sub-folders are read too) are read as
   ``sidda data import-folder`` reads them (:func:`~sidda.datasets.read_image_file`): 8- and
   16-bit images scaled to [0, 1], FITS values kept, the central square, bicubic resizing to
   the size the run's data was imported at (its manifest's ``image_size``, else the model's).
2. **Normalisation and size**, as training loads images: ``data.normalize`` of the run, per
   band, then bilinear resizing to the model's input size.
3. **Model.** A checkpoint by name (``final``, ``best_val_acc``, ``best_val_loss``,
   ``epoch_0007`` when the run kept per-epoch checkpoints), or the pick of a label-free rule
   (``entropy``, ``iwv``, ``dev``) recorded by ``sidda evaluate``. With robust SIDDA (one set of
   BatchNorm statistics per domain) new images are taken as target images unless
   ``domain="source"``.
4. **Probabilities**, optionally divided by the temperature fitted on the run's source
   validation split (``--temperature``; ``sidda evaluate`` fits it), and the latents on request.

The result is one CSV row per image (:func:`~sidda.evaluate.write_predictions_csv`): the name
(file path relative to the input folder, or the row index of a ``.npy`` file), the predicted
class (its name when the run's data has class names), the confidence and every class
probability.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from sidda.config import RunConfig
from sidda.datasets import DataError, read_image_file
from sidda.datasets.fits import FITS_EXTENSIONS
from sidda.datasets.folders import IMAGE_EXTENSIONS
from sidda.datasets.imageset import MappedImages, convert_images, load_split
from sidda.errors import InputError
from sidda.evaluate import PICK_RULES, predict_arrays, run_temperature, write_predictions_csv
from sidda.experiments.evaluation import load_run_model
from sidda.runs import checkpoint_path
from sidda.train.device import check_device

__all__ = ["load_images", "predict_run", "resolve_checkpoint"]

logger = logging.getLogger(__name__)

_SUFFIXES = IMAGE_EXTENSIONS + FITS_EXTENSIONS


def resolve_checkpoint(run_dir: str | Path, checkpoint: str) -> str:
    """The checkpoint file name (without ``.pt``) that ``checkpoint`` names in ``run_dir``.

    A label-free rule (``entropy``, ``iwv``, ``dev``) resolves to the checkpoint it picked in
    the run's last evaluation (``metrics.json``).

    Raises:
        InputError: an unknown name, a rule the run has no pick for (not evaluated yet).
        FileNotFoundError: the run has no such checkpoint.
    """
    run_dir = Path(run_dir)
    if checkpoint in PICK_RULES:
        path = run_dir / "metrics.json"
        picks = {}
        if path.is_file():
            try:
                picks = json.loads(path.read_text()).get("selection", {}).get("rules", {})
            except (ValueError, OSError, AttributeError):
                picks = {}
        if checkpoint not in picks:
            raise InputError(
                f"{run_dir}: no '{checkpoint}' pick recorded; run `sidda evaluate {run_dir}` "
                "first (it scores the saved checkpoints with the label-free rules)"
            )
        return picks[checkpoint]["checkpoint"]
    checkpoint_path(run_dir, checkpoint)  # a known name, and the run has it
    return checkpoint


def _image_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(_SUFFIXES))
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(_SUFFIXES)}) in this folder")
    return files


def load_images(
    path: str | Path, *, in_channels: int, image_size: int, cfg: RunConfig,
    read_size: int | None = None, fit: str = "crop",
) -> tuple[list[str], torch.Tensor | MappedImages]:
    """Images to predict: (names, float32 tensor (N, C, S, S)) prepared like the run's data.

    Args:
        path: A ``.npy`` file, an image or FITS file, or a folder of them.
        in_channels, image_size: The model's input (C and S).
        cfg: The run's config (``data.normalize``, ``data.channels_first``).
        read_size: Size image files are first resized to (the import's size); None: S.
        fit: ``crop`` or ``stretch``, as the import.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix == ".npy":  # read as the run's own image files are
        images = load_split(path, None, normalize=cfg.data.normalize, image_size=image_size,
                            require_labels=False, memory_budget_mb=cfg.data.memory_budget_mb,
                            channels_first=cfg.data.channels_first)
        if images.shape[0] != in_channels:
            raise DataError(f"{path}: images have {images.shape[0]} channel(s) but the model "
                            f"takes {in_channels}; give it images with the bands it was trained "
                            "on")
        return [str(i) for i in range(len(images))], images.x
    files = [path] if path.is_file() else _image_files(path)
    x = np.stack([read_image_file(f, channels=in_channels, size=read_size or image_size, fit=fit)
                  for f in files])  # (N, S, S, C); read_image_file checks the bands
    names = [f.name if path.is_file() else f.relative_to(path).as_posix() for f in files]
    return names, convert_images(np.ascontiguousarray(np.moveaxis(x, -1, 1)),
                                 normalize=cfg.data.normalize, image_size=image_size, name=path)


def _import_settings(cfg: RunConfig) -> tuple[int | None, str]:
    """The size and fit that the run's data was imported with, when ``import-folder`` made it."""
    path = Path(cfg.data.path) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, "crop"
    if manifest.get("generator") != "image-folder":
        return None, "crop"
    return manifest.get("image_size"), manifest.get("fit", "crop")


def predict_run(
    run_dir: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    checkpoint: str = "final",
    domain: str = "target",
    temperature: bool = False,
    latents: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict:
    """Predict ``images`` with a run's model and write ``out`` (CSV); returns a summary.

    Raises:
        InputError: a bad option, images that do not fit the model, no temperature fitted.
        FileNotFoundError: no run, images or checkpoint at the given paths.
    """
    run_dir, out = Path(run_dir), Path(out)
    if domain not in ("source", "target"):
        raise InputError(f"domain must be 'source' or 'target', got {domain!r}")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name for the CSV, e.g. preds.csv")
    device = str(check_device(device))
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.json); train one first")
    name = resolve_checkpoint(run_dir, checkpoint)
    model, info = load_run_model(run_dir, name, domain=domain)
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    temp = None
    if temperature:
        temp = run_temperature(run_dir, checkpoint=name)
        if temp is None:
            raise InputError(
                f"{run_dir}: no temperature fitted for checkpoint '{name}'; run `sidda "
                f"evaluate {run_dir} --checkpoint {name}` first, or predict without "
                "--temperature"
            )
    read_size, fit = _import_settings(cfg)
    names, x = load_images(images, in_channels=info["in_channels"],
                           image_size=info["image_size"], cfg=cfg, read_size=read_size, fit=fit)
    res = predict_arrays(model, x, batch_size=batch_size, device=device, temperature=temp,
                         latents=latents)
    class_names = info.get("class_names")
    write_predictions_csv(out, names, res, class_names=class_names)
    counts = np.bincount(res["pred"].numpy() if torch.is_tensor(res["pred"]) else res["pred"],
                         minlength=info["num_classes"])
    return {"out": str(out), "n": len(names), "checkpoint": name, "domain": domain,
            "temperature": temp, "counts": counts.tolist(), "class_names": class_names}
