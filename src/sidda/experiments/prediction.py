"""Predict new images with a trained run: ``sidda predict RUN IMAGES --out preds.csv``.

The images go through what the run's own images went through, so a prediction sees the same
pixels a test image would:

1. **Reading.** A ``.npy`` file holds images as the training files do (NHW, NHWC or NCHW;
   ``data.channels_first`` of the run decides ambiguous shapes). Image files (PNG, JPEG, TIFF,
   ... and FITS cutouts, alone or in a folder, whose sub-folders are read too) are read as
   ``sidda data import-folder`` reads them (:func:`~sidda.datasets.read_image_file`): 8- and
   16-bit images scaled to [0, 1], FITS values kept, the central square (or the whole image
   stretched), bicubic resizing to the size the run's data was imported at: the import
   settings the run recorded (``data_manifest.json``), not those of the data folder, which may
   have moved or changed since (a warning says when it disagrees); else the model's size.
   FITS files with one image HDU per band are stacked as the import stacked them
   (``--bands``/``--hdu``, recorded as ``fits_hdus``), unless ``hdus`` says otherwise.
   ``.npy`` is recognised in any case (``X.NPY``); ``.npz`` archives are refused.
2. **Normalisation and size**, as training loads images: ``data.normalize`` of the run, per
   band, then bilinear resizing to the model's input size.
3. **Model.** A checkpoint by name (``final``, ``best_val_acc``, ``best_val_loss``,
   ``epoch_0007`` when the run kept per-epoch checkpoints), or the pick of a label-free rule
   (``entropy``, ``iwv``, ``dev``, ...) recorded by ``sidda evaluate``. A run that keeps one set
   of BatchNorm statistics per domain (robust SIDDA, ``loss.domain_bn``) takes new images as
   target images unless ``domain="source"``; the summary names the set only for such runs.
4. **Probabilities**, optionally divided by the temperature fitted on the run's source
   validation split (``--temperature``; ``sidda evaluate`` fits it), and the latents on request.

The result is one CSV row per image (:func:`write_predictions_csv`): the name
(file path relative to the input folder, or the row index of a ``.npy`` file), the predicted
class (its name when the run's data has class names), the confidence and every class
probability.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from sidda.config import RunConfig
from sidda.datasets import (
    DataError,
    ImportSettings,
    import_settings,
    list_image_files,
    read_image_file,
)
from sidda.datasets.fits import check_hdus, is_fits
from sidda.datasets.imagefiles import ALL_EXTENSIONS
from sidda.datasets.imageset import MappedImages, convert_images, load_split
from sidda.datasets.layout import read_manifest
from sidda.errors import InputError
from sidda.evaluate import PICK_RULES, predict_arrays
from sidda.evaluate.predict import NonFiniteOutputs
from sidda.experiments.evaluation import TrainedRun
from sidda.experiments.folder_report import folder_labels, score, write_score
from sidda.experiments.outputs import check_out_file
from sidda.runs import RunDir, atomic_write
from sidda.runs.rundir import DATA_MANIFEST
from sidda.train.device import check_device

__all__ = ["load_images", "predict_run", "resolve_checkpoint", "write_predictions_csv"]

logger = logging.getLogger(__name__)

def resolve_checkpoint(run_dir: RunDir | str | Path, checkpoint: str) -> str:
    """The checkpoint file name (without ``.pt``) that ``checkpoint`` names in ``run_dir``.

    A label-free rule, any validator's name (``entropy``, ``im``, ``snd``, ``iwv``, ...;
    :data:`~sidda.evaluate.PICK_RULES`), resolves to the checkpoint it picked in the run's last
    evaluation (``metrics.json``).

    Raises:
        InputError: an unknown name, a rule the run has no pick for (not evaluated yet).
        FileNotFoundError: the run has no such checkpoint.
    """
    run = RunDir.of(run_dir)
    if checkpoint in PICK_RULES:
        picked = run.pick(checkpoint)
        if picked is None:
            raise InputError(
                f"{run.path}: no '{checkpoint}' pick recorded; run `sidda evaluate {run.path}` "
                "first (it scores the saved checkpoints with the label-free rules)"
            )
        return picked
    run.checkpoint(checkpoint)  # a known name, and the run has it
    return checkpoint


def load_images(
    path: str | Path, *, in_channels: int, image_size: int, cfg: RunConfig,
    read_size: int | None = None, fit: str = "crop", hdus: Sequence[str | int] | None = None,
    trained_on: str | None = None,
) -> tuple[list[str], torch.Tensor | MappedImages]:
    """Images to predict: (names, float32 tensor (N, C, S, S)) prepared like the run's data.

    Args:
        path: A ``.npy`` file, an image or FITS file, or a folder of them.
        in_channels, image_size: The model's input (C and S).
        cfg: The run's config (``data.normalize``, ``data.channels_first``).
        read_size: Size image files are first resized to (the import's size); None: S.
        fit: ``crop`` or ``stretch``, as the import.
        hdus: FITS files with one image HDU per band: the HDUs to stack, by EXTNAME or index,
            as ``import-folder --bands/--hdu``; None reads a 2-D image or a (C, H, W) cube.
        trained_on: ``"fits"`` or ``"image"``, the kind of files the run's data was imported
            from: files of the other kind are read all the same, with a warning (the two are
            scaled differently).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".npz":
        raise DataError(f"{path}: .npz archives are not supported; save the images as one .npy "
                        "array (np.save('images.npy', x))")
    if path.is_file() and path.suffix.lower() == ".npy":  # read as the run's own files are
        images = load_split(path, None, normalize=cfg.data.normalize, image_size=image_size,
                            require_labels=False, memory_budget_mb=cfg.data.memory_budget_mb,
                            channels_first=cfg.data.channels_first)
        if images.shape[0] != in_channels:
            raise DataError(f"{path}: images have {images.shape[0]} channel(s) but the model "
                            f"takes {in_channels}; give it images with the bands it was trained "
                            "on")
        return [str(i) for i in range(len(images))], images.x
    files = [path] if path.is_file() else list_image_files(path)  # recursive, sorted
    if not files:
        raise DataError(f"{path}: no image files ({ALL_EXTENSIONS}) in this folder")
    _warn_other_kind(path, files, trained_on)
    x = np.stack([read_image_file(f, channels=in_channels, size=read_size or image_size, fit=fit,
                                  hdus=hdus)
                  for f in files])  # (N, S, S, C); read_image_file checks the bands
    names = [f.name if path.is_file() else f.relative_to(path).as_posix() for f in files]
    return names, convert_images(np.ascontiguousarray(np.moveaxis(x, -1, 1)),
                                 normalize=cfg.data.normalize, image_size=image_size, name=path)


def _warn_other_kind(path: Path, files: Sequence[Path], trained_on: str | None) -> None:
    """Warn when image files are PNG/JPEG/TIFF for a run imported from FITS, or the reverse."""
    if trained_on not in ("fits", "image"):
        return
    other = [f for f in files if is_fits(f) != (trained_on == "fits")]
    if other:
        kinds = ("PNG/JPEG/TIFF", "FITS") if trained_on == "fits" else ("FITS", "PNG/JPEG/TIFF")
        logger.warning("%s: %d %s file(s) (%s%s), but the run was trained on %s files, which "
                       "sidda scales differently (8- and 16-bit images to [0, 1], FITS values "
                       "as stored); check these predictions, or give it %s files", path,
                       len(other), kinds[0], other[0].name, ", ..." if len(other) > 1 else "",
                       kinds[1], kinds[1])


def _import_settings(run: TrainedRun) -> ImportSettings:
    """How the run's data was imported (size, fit, FITS HDUs), when ``import-folder`` made it.

    Read from the run's own record (``data_manifest.json``); the data folder may have moved or
    been imported again since, so its manifest only earns a warning when it disagrees.
    """
    recorded = run.dir.manifest()
    try:
        own = import_settings(recorded)
    except DataError as e:
        raise run.dir.damaged(DATA_MANIFEST, str(e)) from None
    folder = Path(run.cfg.data.path) / "manifest.json"
    try:
        found = read_manifest(folder.parent)
        now = import_settings(found) if found else None
    except DataError:  # not JSON, or a damaged record
        now = None
    if now is None:  # gone, or nothing to compare with
        return own
    if not recorded:  # a run from before the record: the folder is all there is
        return now
    if now != own:
        logger.warning("%s says the images were imported at size %s with fit %s (HDUs %s), but "
                       "the run was trained on an import at size %s with fit %s (HDUs %s) (%s); "
                       "predicting as the run was trained", folder, *now, *own, DATA_MANIFEST)
    return own


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
    force: bool = False,
    hdus: Sequence[str | int] | None = None,
) -> dict:
    """Predict ``images`` with a run's model and write ``out`` (CSV); returns a summary.

    ``out`` is checked before any work (:func:`~sidda.experiments.outputs.check_out_file`:
    it may not replace an input, a run's file or a file that is not a predictions CSV, unless
    ``force``) and its folder is created. FITS files are read with the HDUs ``hdus`` names
    (``--bands``/``--hdu``), by default those the run's import recorded. A folder of class
    sub-folders named after the run's classes is also scored
    (:mod:`~sidda.experiments.folder_report`): accuracy, confusion matrix and per-class report,
    written beside ``out``.

    Returns:
        ``out``, ``n`` images, ``checkpoint``, ``domain`` (the BatchNorm statistics used, None
        for a run with one set), ``temperature``, ``counts`` per class, ``class_names``,
        ``score`` (:class:`~sidda.experiments.folder_report.Score` or None), ``score_files``
        and ``note`` (why a folder was not scored).

    Raises:
        InputError: a bad option, images that do not fit the model, no temperature fitted.
        FileNotFoundError: no run, images or checkpoint at the given paths.
    """
    run = RunDir.of(run_dir)
    if domain not in ("source", "target"):
        raise InputError(f"domain must be 'source' or 'target', got {domain!r}")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    out = check_out_file(out, kind="csv", inputs=[images], force=force)
    device = str(check_device(device))
    trained = TrainedRun.open(run)
    info = trained.info
    name = resolve_checkpoint(run, checkpoint)
    temp = None
    if temperature:
        temp = run.temperature(name)
        if temp is None:
            raise InputError(
                f"{run.path}: no temperature fitted for checkpoint '{name}'; run `sidda "
                f"evaluate {run.path} --checkpoint {name}` first, or predict without "
                "--temperature"
            )
    loaded = trained.load(name)
    model = loaded.exported(domain)
    settings = _import_settings(trained)
    hdus = settings.hdus if hdus is None else check_hdus(hdus)
    names, x = load_images(images, in_channels=info.in_channels, image_size=info.image_size,
                           cfg=trained.cfg, read_size=settings.image_size, fit=settings.fit,
                           hdus=hdus, trained_on=run.manifest().get("format"))
    try:
        res = predict_arrays(model, x, batch_size=batch_size, device=device, temperature=temp,
                             latents=latents, export=False)
    except NonFiniteOutputs as e:
        raise _nonfinite(e.rows, names, images) from None
    class_names = None if info.class_names is None else list(info.class_names)
    write_predictions_csv(out, names, res, class_names=class_names)
    pred = np.asarray(res["pred"])
    counts = np.bincount(pred, minlength=info.num_classes)
    summary = {"out": str(out), "n": len(names), "checkpoint": name,
               "domain": domain if loaded.stats is not None else None,
               "temperature": temp, "counts": counts.tolist(), "class_names": class_names,
               "score": None, "score_files": None, "note": ""}
    if Path(images).is_dir():
        labels_of = class_names or [str(k) for k in range(info.num_classes)]
        found = folder_labels(names, labels_of)
        summary["note"] = found.note
        if found.labels is not None:
            summary["score"] = score(pred, found.labels, labels_of)
            summary["score_files"] = write_score(out, summary["score"], labels_of)
    return summary


def _nonfinite(rows: list[int], names: Sequence[str], images: str | Path) -> DataError:
    """The error for images whose outputs are NaN or inf (pixels far outside the trained
    range), naming them as the CSV would."""
    bad = [names[i] for i in rows]
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return DataError(
        f"{images}: {len(bad)} image(s) give NaN or inf outputs ({shown}): their pixels are "
        "far outside the range the run was trained on; rescale them as the training images "
        "were (check them with `sidda data check`), or leave them out"
    )


def write_predictions_csv(
    path: str | Path,
    names: Sequence[str],
    out: dict[str, np.ndarray],
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write predictions of new images as CSV, one row per image, atomically.

    Columns: ``name``; ``predicted`` (the class name, or its index without ``class_names``);
    ``confidence`` (the largest probability); ``p_<class>`` per class; ``z_0`` .. ``z_<D-1>``
    when ``out`` holds latents. Numbers are written with full precision (``repr``), so reading
    them back with ``float`` gives the arrays again.

    Args:
        path: The CSV file (its folder must exist).
        names: N image names (e.g. file names), in the order of the arrays.
        out: :func:`~sidda.evaluate.predict_arrays` output: ``probs`` (N, K), ``pred`` (N,),
            optionally ``latents`` (N, D).
        class_names: K class names, or None for class indices.

    Returns:
        ``path``.
    """
    probs, pred = np.asarray(out["probs"]), np.asarray(out["pred"])  # (N, K), (N,)
    lat = np.asarray(out["latents"]) if out.get("latents") is not None else None  # (N, D)
    n, k = probs.shape
    names = [str(s) for s in names]
    if len(names) != n or pred.shape != (n,) or (lat is not None and len(lat) != n):
        raise ValueError(
            f"{len(names)} names, probs of shape {probs.shape} and pred of shape {pred.shape}"
            + ("" if lat is None else f" and latents of shape {lat.shape}")
            + ": need one name, one row of probabilities and one prediction per image"
        )
    labels = [str(c) for c in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(labels) != k:
        raise ValueError(f"{len(labels)} class names for {k} classes; pass one per class")
    header = ["name", "predicted", "confidence"] + [f"p_{c}" for c in labels]
    header += [f"z_{j}" for j in range(lat.shape[1])] if lat is not None else []

    def write(f: BinaryIO) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        w = csv.writer(text)
        w.writerow(header)
        for i in range(n):
            row = probs[i].tolist()
            w.writerow([names[i], labels[int(pred[i])], repr(max(row)), *map(repr, row),
                        *(map(repr, lat[i].tolist()) if lat is not None else ())])
        text.flush()
        text.detach()  # leave the binary file open for atomic_write's fsync

    return atomic_write(path, write)
