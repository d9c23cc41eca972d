"""Whole experiments: train a run directory from a config, evaluate it, run the demo.

:func:`train_run` validates everything it can (config, data, model, sizes) *before* it creates
the run directory, so bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataConfig, DataError, DomainData, load_domains, split_indices
from sidda.evaluate import domain_metrics, predict, save_predictions, write_metrics
from sidda.models import build_model
from sidda.runs import CHECKPOINTS, atomic_write, environment_info, load_checkpoint, write_json
from sidda.train import Callback, fit, resolve_device

__all__ = ["evaluate_run", "load_run_model", "prepare_data", "train_run"]

logger = logging.getLogger(__name__)


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
    """
    data = load_domains(cfg.data, splits=("train",))
    seed = cfg.train.seed
    tr_s, va_s = split_indices(len(data.train_s), cfg.data.val_fraction, seed=seed)
    tr_t, va_t = split_indices(len(data.train_t), cfg.data.val_fraction, seed=seed + 1)
    sets = {
        "train_s": data.train_s.subset(tr_s),
        "val_s": data.train_s.subset(va_s),
        "train_t": data.train_t.subset(tr_t),
        "val_t": data.train_t.subset(va_t),
    }
    _check_fits(cfg, data, len(tr_s))
    return data, sets


def train_run(
    cfg: RunConfig,
    *,
    argv: Sequence[str] = (),
    force: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train one run into ``cfg.run_dir`` and return that directory.

    Raises:
        ConfigError, DataError: before anything is written.
        FileExistsError: the run directory exists and ``force`` is False.
    """
    run_dir = cfg.run_dir
    if run_dir.exists() and not force:
        raise FileExistsError(
            f"{run_dir} already exists; choose another name (--set name=...), or pass --force "
            "to replace it"
        )
    data, sets = prepare_data(cfg)
    resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    model = build_model(
        cfg.model.name, in_channels=data.in_channels, num_classes=data.num_classes,
        image_size=data.image_size, dropout=cfg.model.dropout, latent_dim=cfg.model.latent_dim,
    )
    # Everything is valid: only now touch the disk.
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    atomic_write(run_dir / "config.yaml", cfg.to_yaml())
    atomic_write(run_dir / "argv.txt", " ".join(argv) + "\n")
    write_json(run_dir / "run.json", {
        "method": cfg.loss.method, "model": cfg.model.name, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "image_size": data.image_size,
        "data_path": str(Path(cfg.data.path).resolve()),
        "class_names": data.manifest.get("class_names"),
        "sizes": {k: len(v) for k, v in sets.items()},
    })
    write_json(run_dir / "environment.json", environment_info() | {"seed": cfg.train.seed})
    write_json(run_dir / "data_manifest.json", data.manifest)
    t0 = time.perf_counter()
    hist = fit(
        model, sets["train_s"], sets["train_t"], cfg.train, loss=cfg.loss,
        val_s=sets["val_s"], val_t=sets["val_t"], run_dir=run_dir, callbacks=callbacks,
    )
    write_json(run_dir / "summary.json", {
        "best_epochs": hist.best, "stopped_early": hist.stopped_early,
        "epochs_run": len(hist.epochs), "seconds": time.perf_counter() - t0,
        "final": hist.epochs[-1],
    })
    return run_dir


def load_run_model(run_dir: str | Path, checkpoint: str = "final") -> tuple[torch.nn.Module, dict]:
    """Rebuild a run's model from its directory and load a checkpoint into it."""
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.json); train one first")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    info = json.loads(info_path.read_text())
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    model = build_model(
        cfg.model.name, in_channels=info["in_channels"], num_classes=info["num_classes"],
        image_size=info["image_size"], dropout=cfg.model.dropout,
        latent_dim=cfg.model.latent_dim,
    )
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt")
    model.load_state_dict(ckpt["model"])
    return model.eval(), info | {"checkpoint_epoch": ckpt["epoch"]}


def evaluate_run(
    run_dir: str | Path,
    *,
    data_path: str | Path | None = None,
    checkpoint: str = "final",
    device: str = "cpu",
    n_bins: int = 15,
    calibration: bool = True,
    selection: bool = True,
) -> dict:
    """Evaluate a run on the source and target test sets and write ``metrics.json``.

    Beyond the test metrics of the chosen checkpoint (:mod:`sidda.evaluate` lists them):

    * temperature scaling, fitted on the run's own **source validation** split (rebuilt with
      :func:`prepare_data`, same seed) and applied to both test domains;
    * the paper-compatible probe numbers, cross-fitted;
    * label-free selection over all saved checkpoints, with the target-label oracle.

    Args:
        run_dir: A directory written by :func:`train_run`.
        data_path: Data folder (default: the one the run was trained on); its ``train``
            split provides the validation images.
        checkpoint: ``final``, ``best_val_acc`` or ``best_val_loss``.
        device: Where to compute.
        n_bins: Bins of the ECE.
        calibration: Add temperature scaling and the paper-compatible probe.
        selection: Add the label-free checkpoint selection.
    """
    from dataclasses import replace

    from sidda.datasets import ImageSet
    from sidda.evaluate import (
        Predictions,
        checkpoint_scores,
        fit_source_temperature,
        paper_compatible,
        select_checkpoints,
        temperature_metrics,
    )
    from sidda.models import export_model

    run_dir = Path(run_dir)
    model, info = load_run_model(run_dir, checkpoint)
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    dcfg = DataConfig(**{**cfg.data.__dict__, "path": str(data_path or cfg.data.path)})
    data = load_domains(dcfg, splits=("test",))
    if data.test_s.shape != (info["in_channels"], info["image_size"], info["image_size"]):
        raise DataError(
            f"test images have shape {data.test_s.shape} but the model was trained on "
            f"{(info['in_channels'], info['image_size'], info['image_size'])}"
        )
    report = {
        "method": info["method"], "model": info["model"], "checkpoint": checkpoint,
        "checkpoint_epoch": info["checkpoint_epoch"], "data_path": str(Path(dcfg.path).resolve()),
        "n_bins": n_bins,
    }
    preds = {}
    for domain, images in (("source", data.test_s), ("target", data.test_t)):
        preds[domain] = pred = predict(model, images, device=device)
        report[domain] = domain_metrics(
            pred, num_classes=info["num_classes"], class_names=info.get("class_names"),
            n_bins=n_bins,
        )
        save_predictions(run_dir, domain, pred)
    if calibration or selection:
        # The run's own train/validation split, rebuilt exactly as train_run made it.
        _, sets = prepare_data(replace(cfg, data=dcfg))
        expected = (info.get("sizes") or {}).get("val_s")
        if expected is not None and expected != len(sets["val_s"]):
            raise DataError(
                f"{dcfg.path}: the source validation split has {len(sets['val_s'])} images but "
                f"the run was trained with {expected}; evaluate with the training data folder"
            )
        val_t_images = ImageSet(sets["val_t"].x, None, sets["val_t"].name)  # labels dropped
        val_s = (predict(model, sets["val_s"], device=device) if len(sets["val_s"]) else
                 Predictions(torch.empty(0, info["num_classes"]), torch.empty(0, 0), None))
    if calibration:
        # Source validation logits and labels only: no target label reaches the fit.
        temp = fit_source_temperature(val_s)
        report["temperature"] = temp
        for domain, pred in preds.items():
            if pred.labels is None:
                continue
            if temp["value"] is not None:
                report[domain]["temperature_scaled"] = temperature_metrics(
                    pred.logits, pred.labels, temp["value"], n_bins=n_bins
                )
            report[domain]["paper_compatible"] = paper_compatible(pred)
    if selection and len(sets["val_s"]) and len(sets["val_t"]):
        candidates = {}
        for name in CHECKPOINTS:
            path = run_dir / "checkpoints" / f"{name}.pt"
            if not path.is_file():
                continue
            if name == checkpoint:  # reuse what was computed above
                p = {"val_s": val_s, "test_s": preds["source"],
                     "test_t": preds["target"]}
                p["val_t"] = predict(model, val_t_images, device=device)
            else:
                net = export_model(load_run_model(run_dir, name)[0])
                p = {key: predict(net, images, device=device, export=False) for key, images in (
                    ("val_s", sets["val_s"]), ("val_t", val_t_images),
                    ("test_s", data.test_s), ("test_t", data.test_t))}
            candidates[name] = checkpoint_scores(**p, record=load_checkpoint(path).get("record"))
        report["selection"] = select_checkpoints(candidates)
    elif selection:
        report["selection"] = {"candidates": {}, "rules": {}, "reason": (
            "no validation images (data.val_fraction = 0): nothing to select with")}
    write_metrics(run_dir, report)
    return report
