r"""The files of an evaluation: ``metrics.json`` and the per-image arrays, written as a whole.

:func:`sidda.experiments.evaluate_run` composes :mod:`sidda.evaluate` and writes
``metrics.json`` (:func:`publish_evaluation`) into the run directory::

    {"method": "sidda" | "source_only", "model": "cnn", "checkpoint": "final", "n_bins": 15,
     "source": {"n", "accuracy", "ece", "brier", "nll", "confusion_matrix", "report",
                "temperature_scaled": {"ece", "brier", "nll"},
                "paper_compatible": {"probe_accuracy", "probe_ece", "probe_brier",
                                     "network_ece", "network_brier", ...}},
     "target": {...},
     "temperature": {"value", "fitted_on", "n", "val_nll_before", "val_nll_after"},
     "selection": {"candidates": {...}, "rules": {...}}}

Beside it: ``logits_``, ``probs_``, ``labels_`` and ``latents_{source,target}.npy`` in file
order. A target domain without labels gets predictions but no label-based metrics.
:func:`run_temperature` reads the fitted T back; :func:`write_predictions_csv` writes the
predictions of new images (``sidda predict``) as one CSV row per image.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sidda.errors import InputError, short_repr
from sidda.evaluate.predict import Predictions
from sidda.runs import atomic_dir, atomic_write, fsync_dir, write_json

__all__ = [
    "MAX_BINS",
    "PREDICTION_FILES",
    "check_bins",
    "clean_staging",
    "publish_evaluation",
    "run_temperature",
    "save_predictions",
    "write_metrics",
    "write_predictions_csv",
]

#: Most ECE bins an evaluation takes (the reliability diagram draws every bin).
MAX_BINS = 1000


def check_bins(n_bins: object) -> int:
    """``n_bins`` if it is an integer in 1..:data:`MAX_BINS`, else :class:`InputError`.

    >>> check_bins(15)
    15
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 1 <= n_bins <= MAX_BINS:
        raise InputError(
            f"--bins (n_bins) must be an integer in 1..{MAX_BINS}, got {short_repr(n_bins)}; "
            "the default is 15"
        )
    return n_bins


def _prediction_arrays(pred: Predictions) -> dict[str, np.ndarray]:
    arrays = {"logits": pred.logits.numpy(), "probs": pred.probs.numpy(),
              "latents": pred.latents.numpy()}
    if pred.labels is not None:
        arrays["labels"] = pred.labels.numpy()
    return arrays


def _save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr))


def save_predictions(run_dir: Path, domain: str, pred: Predictions) -> None:
    """Write ``logits_``, ``probs_``, ``labels_`` and ``latents_<domain>.npy`` atomically.

    Each file on its own; :func:`publish_evaluation` writes a whole evaluation.
    """
    for kind, arr in _prediction_arrays(pred).items():
        _save_npy(run_dir / f"{kind}_{domain}.npy", arr)


def write_metrics(run_dir: Path, report: dict) -> Path:
    """Atomically write ``metrics.json``."""
    return write_json(run_dir / "metrics.json", report)


#: Per-image arrays of an evaluation: ``<kind>_<domain>.npy``.
PREDICTION_FILES = tuple(f"{k}_{d}.npy" for k in ("logits", "probs", "latents", "labels")
                         for d in ("source", "target"))
_STAGING = ".evaluation-staging"


def clean_staging(out_dir: Path) -> None:
    """Remove what an evaluation killed while writing into ``out_dir`` left behind."""
    out_dir = Path(out_dir)
    for p in (out_dir / _STAGING, out_dir.parent / f".{out_dir.name}{_STAGING}",
              out_dir.parent / f".{out_dir.name}.old"):
        if p.is_dir():
            shutil.rmtree(p)


def publish_evaluation(
    out_dir: str | Path, report: dict, preds: dict[str, Predictions], *, own_folder: bool
) -> Path:
    """Write one evaluation (``metrics.json`` and the per-image arrays) as a whole.

    Everything is first written into a staging folder. ``own_folder=True`` (``out_dir`` holds
    nothing else, e.g. ``RUN/eval/<data>``): the staging folder is renamed into place, so a
    reader sees the old evaluation or the new one. ``own_folder=False`` (the run directory):
    ``metrics.json`` is removed first and put back last, and arrays the new evaluation does
    not write (``labels_target.npy`` for an unlabelled target) are removed, so that a
    ``metrics.json`` always describes the arrays beside it; a kill in between leaves no
    ``metrics.json`` (the run counts as not evaluated).

    Returns:
        The path of the new ``metrics.json``.
    """
    out_dir = Path(out_dir)
    clean_staging(out_dir)
    if own_folder:
        with atomic_dir(out_dir, replace=True) as staging:
            staging.mkdir()
            _write_evaluation(staging, report, preds)
        return out_dir / "metrics.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / _STAGING
    staging.mkdir()
    names = _write_evaluation(staging, report, preds)
    (out_dir / "metrics.json").unlink(missing_ok=True)
    fsync_dir(out_dir)
    for name in PREDICTION_FILES:
        if name not in names:
            (out_dir / name).unlink(missing_ok=True)  # stale: not part of this evaluation
    for name in names:
        os.replace(staging / name, out_dir / name)
    fsync_dir(out_dir)
    os.replace(staging / "metrics.json", out_dir / "metrics.json")
    fsync_dir(out_dir)
    staging.rmdir()
    return out_dir / "metrics.json"


def _write_evaluation(folder: Path, report: dict, preds: dict[str, Predictions]) -> list[str]:
    """The arrays and ``metrics.json`` of one evaluation into ``folder``; the arrays' names."""
    names = []
    for domain, pred in preds.items():
        for kind, arr in _prediction_arrays(pred).items():
            names.append(f"{kind}_{domain}.npy")
            _save_npy(folder / names[-1], arr)
    write_metrics(folder, report)
    return names


# --------------------------------------------------------------------------- new images


def run_temperature(run_dir: str | Path, *, checkpoint: str | None = None) -> float | None:
    """The temperature T of an evaluated run: ``metrics.json`` ``["temperature"]["value"]``.

    T was fitted on the run's source validation split for the evaluated checkpoint
    (:func:`~sidda.evaluate.fit_source_temperature`).

    Args:
        run_dir: The run directory (where ``sidda evaluate`` wrote ``metrics.json``).
        checkpoint: The checkpoint the caller predicts with; when given and not the one that
            was evaluated, T belongs to other weights and None is returned.

    Returns:
        T, or None when the run was not evaluated, was evaluated without calibration or
        without a labelled source validation split, or for another checkpoint.

    Raises:
        InputError: ``metrics.json`` is not readable JSON or T is not a number > 0.
    """
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(
            f"{path}: cannot read it ({e}); evaluate the run again (sidda evaluate)"
        ) from None
    if not isinstance(report, dict):
        raise InputError(f"{path}: not an evaluation (a JSON object expected)")
    if checkpoint is not None and report.get("checkpoint", "final") != checkpoint:
        return None
    value = (report.get("temperature") or {}).get("value")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value > 0
    ):
        raise InputError(f"{path}: temperature {short_repr(value)} is not a number > 0; "
                         "evaluate the run again (sidda evaluate)")
    return float(value)


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
