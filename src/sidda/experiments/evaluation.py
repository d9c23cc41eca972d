"""Evaluate run directories: rebuild a run's model, compute its test metrics, write them.

:func:`evaluate_run` writes ``metrics.json`` and the per-image arrays of one run
(``docs/evaluation.md``); :func:`evaluate_runs` evaluates several, only those whose results are
missing or incomplete unless told otherwise (:func:`needs_evaluation`), as ``sidda report`` does
before it renders its page.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from sidda.config import RunConfig
from sidda.datasets import DataConfig, DataError, DomainData, ImageSet, load_domains
from sidda.errors import InputError
from sidda.evaluate import (
    MAX_BINS,
    PICK_RULES,
    Predictions,
    check_bins,
    checkpoint_scores,
    domain_metrics,
    fit_source_temperature,
    paper_compatible,
    predict,
    publish_evaluation,
    select_checkpoints,
    temperature_metrics,
)
from sidda.experiments.data import prepare_data
from sidda.methods.domain_bn import load_target_stats
from sidda.models import build_model, export_model
from sidda.runs import (
    check_checkpoint_name,
    checkpoint_path,
    load_checkpoint,
    lock_run,
    model_checkpoints,
)
from sidda.train.device import check_device

__all__ = ["EVALUATION_ARRAYS", "evaluate_run", "evaluate_runs", "evaluation_dir",
           "load_run_model", "needs_evaluation"]

logger = logging.getLogger(__name__)

#: Per-image arrays (``<kind>_<domain>.npy``) that a complete evaluation holds for each domain.
EVALUATION_ARRAYS = ("logits", "latents", "probs")


def load_run_model(
    run_dir: str | Path, checkpoint: str = "final", *, domain: str = "source"
) -> tuple[torch.nn.Module, dict]:
    """Rebuild a run's model from its directory and load a checkpoint into it.

    ``domain="target"`` loads the target domain's BatchNorm statistics into the model when the
    run kept its own for each domain (robust SIDDA, :mod:`sidda.methods.domain_bn`); otherwise
    both domains get the same model.
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.json); train one first")
    path = checkpoint_path(run_dir, checkpoint)
    info = json.loads(info_path.read_text())
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    model = build_model(
        cfg.model.name, in_channels=info["in_channels"], num_classes=info["num_classes"],
        image_size=info["image_size"], dropout=cfg.model.dropout,
        latent_dim=cfg.model.latent_dim,
    )
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    stats = load_target_stats(model, ckpt.get("loss") or {})
    if domain == "target" and stats is not None:
        stats._swap()  # the target statistics now sit in the model's layers, for good
    return model.eval(), info | {"checkpoint_epoch": ckpt["epoch"],
                                 "domain_bn": stats is not None}


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
    * label-free selection over all saved checkpoints (``final``, ``best_*`` and the epoch
      checkpoints a run kept), with the target-label oracle.

    Args:
        run_dir: A directory written by :func:`train_run`.
        data_path: Data folder (default: the one the run was trained on); its ``train``
            split provides the validation images.
        checkpoint: ``final``, ``best_val_acc``, ``best_val_loss``, ``epoch_0007`` (runs
            trained with ``train.keep_epoch_checkpoints``), or a label-free rule (``entropy``,
            ``iwv``, ``dev``; :mod:`sidda.evaluate.selection`): the saved checkpoint the rule
            picks, from validation images only, is evaluated (``metrics.json`` records it as
            ``checkpoint`` and the rule as ``checkpoint_rule``).
        device: Where to compute.
        n_bins: Bins of the ECE.
        calibration: Add temperature scaling and the paper-compatible probe.
        selection: Add the label-free checkpoint selection.

    The run directory is locked while it is evaluated (:func:`~sidda.runs.lock_run`), and the
    results are written as a whole (:func:`~sidda.evaluate.publish_evaluation`): into the run
    directory for the run's own data, into ``RUN/eval/<data folder name>`` for other data
    (:func:`evaluation_dir`).

    Raises:
        InputError: a bad option (``n_bins``, ``device``), another process holds the run, a
            damaged checkpoint; :class:`~sidda.datasets.DataError` for unusable data.
    """
    run_dir = Path(run_dir)
    check_bins(n_bins)
    device = str(check_device(device))
    if not (run_dir / "run.json").is_file():  # before the lock, which would make the folder
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.json); train one first")
    out_dir = evaluation_dir(run_dir, data_path)
    with lock_run(run_dir, what="evaluate"):
        return _evaluate_locked(run_dir, out_dir, data_path=data_path, checkpoint=checkpoint,
                                device=device, n_bins=n_bins, calibration=calibration,
                                selection=selection)


def evaluation_dir(run_dir: str | Path, data_path: str | Path | None = None) -> Path:
    """Where :func:`evaluate_run` writes ``metrics.json`` and the per-image arrays.

    The run directory itself for the data the run was trained on (``data_path`` None or that
    folder); ``RUN/eval/<folder name>`` for other data, so that evaluating elsewhere never
    replaces the run's own results.

    >>> evaluation_dir("runs/a")
    PosixPath('runs/a')
    """
    run_dir = Path(run_dir)
    if data_path is None:
        return run_dir
    other = Path(data_path).resolve()
    own = set()
    if (run_dir / "run.json").is_file():
        with contextlib.suppress(ValueError, OSError):
            own.add(json.loads((run_dir / "run.json").read_text()).get("data_path"))
    if (run_dir / "config.yaml").is_file():
        with contextlib.suppress(ValueError, OSError):
            own.add(str(Path(RunConfig.from_yaml(run_dir / "config.yaml").data.path).resolve()))
    if str(other) in own:
        return run_dir
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in other.name).lstrip(".")
    return run_dir / "eval" / (name or "data")


def _evaluate_locked(
    run_dir: Path, out_dir: Path, *, data_path: str | Path | None, checkpoint: str, device: str,
    n_bins: int, calibration: bool, selection: bool,
) -> dict:
    """:func:`evaluate_run` with the run directory locked."""
    info = json.loads((run_dir / "run.json").read_text())
    rule = checkpoint if checkpoint in PICK_RULES else None
    if rule is None:
        checkpoint_path(run_dir, checkpoint)  # a missing checkpoint fails before any work
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    dcfg = DataConfig(**{**cfg.data.__dict__, "path": str(data_path or cfg.data.path)})
    data = load_domains(dcfg, splits=("test",))
    _check_test_data(data, info)
    sets = _validation_sets(cfg, dcfg, info) if calibration or selection or rule else None
    cache: dict[str, dict[str, Predictions]] = {}
    candidates = None
    if (selection or rule) and sets is not None and len(sets["val_s"]) and len(sets["val_t"]):
        candidates = {}
        for name in model_checkpoints(run_dir):
            cache[name] = _predict_checkpoint(run_dir, name, data, sets, info, device)
            record = load_checkpoint(checkpoint_path(run_dir, name)).get("record")
            candidates[name] = checkpoint_scores(**cache[name], record=record)
    if rule is not None:
        picked = (select_checkpoints(candidates)["rules"].get(rule) if candidates else None)
        if picked is None:
            raise InputError(
                f"{run_dir}: the '{rule}' rule needs validation images of both domains "
                "(data.val_fraction > 0); evaluate a named checkpoint instead (final)"
            )
        checkpoint = picked["checkpoint"]
        logger.info("rule %s picks checkpoint %s", rule, checkpoint)
    preds_all = cache.get(checkpoint) or _predict_checkpoint(
        run_dir, checkpoint, data, sets, info, device, validation=calibration)
    report = {
        "method": info["method"], "model": info["model"], "checkpoint": checkpoint,
        "checkpoint_epoch": _checkpoint_epoch(run_dir, checkpoint),
        "data_path": str(Path(dcfg.path).resolve()), "n_bins": n_bins,
    }
    if rule is not None:
        report["checkpoint_rule"] = rule
    names = info.get("class_names")
    if names is not None and len(names) != info["num_classes"]:
        names = None  # a run from before run.json checked them: classes by number
    preds = {"source": preds_all["test_s"], "target": preds_all["test_t"]}
    for domain, pred in preds.items():
        report[domain] = domain_metrics(
            pred, num_classes=info["num_classes"], class_names=names, n_bins=n_bins,
        )
    if calibration:
        # Source validation logits and labels only: no target label reaches the fit.
        val_s = preds_all.get("val_s") or Predictions(
            torch.empty(0, info["num_classes"]), torch.empty(0, 0), None)
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
    if selection and candidates is not None:
        report["selection"] = select_checkpoints(candidates)
    elif selection:
        report["selection"] = {"candidates": {}, "rules": {}, "reason": (
            "no validation images (data.val_fraction = 0): nothing to select with")}
    publish_evaluation(out_dir, report, preds, own_folder=out_dir != run_dir)
    return report


def _check_test_data(data: DomainData, info: dict) -> None:
    if data.test_s.shape != (info["in_channels"], info["image_size"], info["image_size"]):
        raise DataError(
            f"test images have shape {data.test_s.shape} but the model was trained on "
            f"{(info['in_channels'], info['image_size'], info['image_size'])}"
        )
    for images in (data.test_s, data.test_t):
        if images.y is not None and len(images.y) and int(images.y.max()) >= info["num_classes"]:
            raise DataError(
                f"{images.name}: label {int(images.y.max())} is outside the model's classes "
                f"0..{info['num_classes'] - 1}; evaluate on data with the run's "
                f"{info['num_classes']} classes"
            )


def _validation_sets(cfg: RunConfig, dcfg: DataConfig, info: dict) -> dict[str, ImageSet]:
    """The run's own train/validation split, rebuilt exactly as train_run made it; the target
    validation labels are dropped (no label-free rule may read them)."""
    _, sets = prepare_data(replace(cfg, data=dcfg))
    expected = (info.get("sizes") or {}).get("val_s")
    if expected is not None and expected != len(sets["val_s"]):
        raise DataError(
            f"{dcfg.path}: the source validation split has {len(sets['val_s'])} images but "
            f"the run was trained with {expected}; evaluate with the training data folder"
        )
    return {"val_s": sets["val_s"], "val_t": ImageSet(sets["val_t"].x, None, sets["val_t"].name)}


def _predict_checkpoint(
    run_dir: Path, name: str, data: DomainData, sets: dict[str, ImageSet] | None, info: dict,
    device: str, *, validation: bool = True,
) -> dict:
    """One checkpoint's predictions on the test sets (and the validation sets): source images
    through the source model, target images through the target one (domain BatchNorm)."""
    model, meta = load_run_model(run_dir, name)
    net = export_model(model)
    net_t = export_model(load_run_model(run_dir, name, domain="target")[0]) \
        if meta["domain_bn"] else net
    jobs = [("test_s", data.test_s, net), ("test_t", data.test_t, net_t)]
    if validation and sets is not None:
        jobs += [("val_s", sets["val_s"], net), ("val_t", sets["val_t"], net_t)]
    out = {key: predict(m, images, device=device, export=False) for key, images, m in jobs
           if len(images)}
    return out


def _checkpoint_epoch(run_dir: Path, name: str) -> int | None:
    return load_checkpoint(checkpoint_path(run_dir, name)).get("epoch")


def needs_evaluation(run_dir: str | Path) -> bool:
    """True when ``metrics.json`` is missing or incomplete, or a per-image array is missing.

    Complete: temperature scaling and checkpoint selection present, a bin count in
    ``1..MAX_BINS``, and the :data:`EVALUATION_ARRAYS` of both domains (the report draws them).
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        return True
    m = json.loads(path.read_text())
    if "selection" not in m or "temperature" not in m:
        return True
    bins = m.get("n_bins", 15)
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
        return True  # e.g. written by an older sidda with --bins 100000000: too many to draw
    return not all((run_dir / f"{k}_{d}.npy").is_file() for k in EVALUATION_ARRAYS
                   for d in ("source", "target"))


def evaluate_runs(
    run_dirs: Sequence[str | Path],
    *,
    when: str = "missing",
    checkpoint: str = "final",
    n_bins: int = 15,
    device: str = "cpu",
) -> list[dict]:
    """Evaluate several runs (:func:`evaluate_run`); each run's ``metrics.json``, in order.

    Args:
        run_dirs: Run directories written by :func:`~sidda.experiments.train_run`.
        when: ``"missing"`` evaluates a run whose results are missing or incomplete
            (:func:`needs_evaluation`) and reads the others' ``metrics.json`` as it is (of
            whichever checkpoint it was evaluated); ``"always"`` evaluates every run.
        checkpoint: Checkpoint evaluated when a run is (re-)evaluated.
        n_bins: ECE bins when a run is (re-)evaluated.
        device: Where to evaluate.

    Raises:
        ValueError: an unknown ``when``; :func:`evaluate_run`'s errors otherwise. The options
            are checked before any run is evaluated.
    """
    if when not in ("missing", "always"):
        raise ValueError(f"when must be 'missing' or 'always', got {when!r}")
    check_bins(n_bins)
    if checkpoint not in PICK_RULES:
        check_checkpoint_name(checkpoint)
    device = str(check_device(device))
    out = []
    for p in map(Path, run_dirs):
        if when == "always" or needs_evaluation(p):
            logger.info("evaluating %s (checkpoint %s)", p, checkpoint)
            out.append(evaluate_run(p, checkpoint=checkpoint, n_bins=n_bins, device=device))
        else:
            out.append(json.loads((p / "metrics.json").read_text()))
    return out
