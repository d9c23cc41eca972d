"""Evaluate run directories: rebuild a run's model, compute its test metrics, write them.

:func:`evaluate_run` writes ``metrics.json`` and the per-image arrays of one run
(``docs/evaluation.md``); :func:`evaluate_runs` evaluates several, only those whose results are
missing, incomplete or damaged unless told otherwise (:meth:`~sidda.runs.RunDir.evaluation`),
as ``sidda report`` does before it renders its page. A run is read once
(:class:`TrainedRun`: ``config.yaml`` and ``run.json``) and each checkpoint loaded once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from sidda.config import RunConfig
from sidda.datasets import DataConfig
from sidda.datasets.check import run_data_config
from sidda.errors import InputError
from sidda.evaluate import (
    PICK_RULES,
    Predictions,
    check_bins,
    checkpoint_scores,
    domain_metrics,
    fit_source_temperature,
    label_free_diagnostics,
    paper_compatible,
    predict,
    select_checkpoints,
    temperature_metrics,
)
from sidda.experiments.data import changed_data
from sidda.experiments.evaluation_data import EvaluationData, evaluation_data
from sidda.experiments.training import run_config
from sidda.methods.domain_bn import DomainStats, load_target_stats
from sidda.models import build_model, export_model
from sidda.runs import RunDir, RunInfo, RunState, check_checkpoint_name
from sidda.train.device import check_device

__all__ = ["LoadedModel", "TrainedRun", "evaluate_run", "evaluate_runs", "evaluation_dir",
           "load_run_model"]

logger = logging.getLogger(__name__)


class LoadedModel(NamedTuple):
    """One checkpoint, loaded once into the run's model."""

    model: torch.nn.Module  #: in eval mode, with the source BatchNorm statistics
    stats: DomainStats | None  #: the target statistics (robust SIDDA), or None
    epoch: int | None  #: the epoch it was saved at
    record: dict | None  #: the validation record saved with it (selection reads it)

    def exported(self, domain: str = "source") -> torch.nn.Module:
        """An inference copy for ``domain``'s images (``"target"``: with the target
        statistics, when the run kept its own for each domain)."""
        if domain == "target" and self.stats is not None:
            with self.stats.target():
                return export_model(self.model)
        return export_model(self.model)


@dataclass(frozen=True)
class TrainedRun:
    """A run directory with its ``config.yaml`` and ``run.json`` read once."""

    dir: RunDir
    cfg: RunConfig
    info: RunInfo

    @classmethod
    def open(cls, run: RunDir | str | Path) -> TrainedRun:
        """Read a run.

        Raises:
            FileNotFoundError: no run there; DamagedFileError: a file no longer reads.
        """
        run = RunDir.of(run)
        run.require(RunState.SET_UP)
        return cls(run, run_config(run), run.info())

    def load(self, checkpoint: str) -> LoadedModel:
        """The run's model with checkpoint ``checkpoint`` loaded (its file read once)."""
        ckpt = self.dir.load_checkpoint(checkpoint)
        model = build_model(
            self.cfg.model.name, in_channels=self.info.in_channels,
            num_classes=self.info.num_classes, image_size=self.info.image_size,
            dropout=self.cfg.model.dropout, latent_dim=self.cfg.model.latent_dim,
        )
        model.load_state_dict(ckpt["model"])
        model.eval()
        stats = load_target_stats(model, ckpt.get("loss") or {})
        return LoadedModel(model, stats, ckpt.get("epoch"), ckpt.get("record"))

    def is_own_data(self, data_path: str | Path | None) -> bool:
        """True for None, the folder the run was trained on, or the one its config names."""
        if data_path is None:
            return True
        own = {self.info.data_path, str(Path(self.cfg.data.path).resolve())}
        return str(Path(data_path).resolve()) in own

    def data_config(self, data_path: str | Path | None) -> DataConfig:
        """How to load ``data_path`` (None: the run's own data), by
        :func:`~sidda.datasets.check.run_data_config` (the target suffix)."""
        return run_data_config(self.cfg.data, data_path or self.cfg.data.path,
                               own=self.is_own_data(data_path),
                               target_suffix=self.info.target_suffix)


def load_run_model(
    run_dir: RunDir | str | Path, checkpoint: str = "final", *, domain: str = "source"
) -> tuple[torch.nn.Module, dict]:
    """Rebuild a run's model from its directory and load a checkpoint into it.

    ``domain="target"`` loads the target domain's BatchNorm statistics into the model when the
    run kept its own for each domain (robust SIDDA, :mod:`sidda.methods.domain_bn`); otherwise
    both domains get the same model. Returns the model and ``run.json`` with
    ``checkpoint_epoch`` and ``domain_bn``.
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    run = TrainedRun.open(run_dir)
    loaded = run.load(checkpoint)
    if domain == "target" and loaded.stats is not None:
        loaded.stats._swap()  # the target statistics now sit in the model's layers, for good
    return loaded.model, run.info.to_json() | {"checkpoint_epoch": loaded.epoch,
                                               "domain_bn": loaded.stats is not None}


def evaluate_run(
    run_dir: TrainedRun | RunDir | str | Path,
    *,
    data_path: str | Path | None = None,
    checkpoint: str = "final",
    device: str = "cpu",
    n_bins: int = 15,
    calibration: bool = True,
    selection: bool = True,
    label_free: bool = True,
) -> dict:
    """Evaluate a run on the source and target test sets and write ``metrics.json``.

    Beyond the test metrics of the chosen checkpoint (:mod:`sidda.evaluate` lists them):

    * temperature scaling, fitted on the run's own **source validation** split (rebuilt as
      training made it, same seed) and applied to both test domains;
    * the paper-compatible probe numbers, cross-fitted;
    * label-free selection over all saved checkpoints (``final``, ``best_*`` and the epoch
      checkpoints a run kept), with the target-label oracle;
    * ``label_free``: :func:`~sidda.evaluate.label_free_diagnostics` of the **target test**
      images (no target label read) against the source validation split, with the source
      training class counts (``run.json``) as the collapse flag's reference.

    Args:
        run_dir: A directory written by :func:`train_run` (or one read already,
            :class:`TrainedRun`).
        data_path: Data folder (default: the one the run was trained on, with the target
            suffix it was trained with). Another folder needs only the target test images
            (labels optional); what it lacks (source test images, the run's validation split)
            is taken from the run's own data folder while it is there, else left out, and
            ``metrics.json["notes"]`` says so (:mod:`sidda.experiments.evaluation_data`).
        checkpoint: ``final``, ``best_val_acc``, ``best_val_loss``, ``epoch_0007`` (runs
            trained with ``train.keep_epoch_checkpoints``), or a label-free rule, any
            validator's name (``entropy``, ``im``, ``snd``, ``iwv``, ...;
            :data:`~sidda.evaluate.PICK_RULES`, :mod:`sidda.evaluate.selection`): the saved
            checkpoint the rule picks, from validation images only, is evaluated
            (``metrics.json`` records it as ``checkpoint`` and the rule as ``checkpoint_rule``).
        device: Where to compute.
        n_bins: Bins of the ECE.
        calibration: Add temperature scaling and the paper-compatible probe.
        selection: Add the label-free checkpoint selection.
        label_free: Add the label-free diagnostics.

    The run directory is locked while it is evaluated, and the results are written as a whole
    (:meth:`~sidda.runs.RunDir.publish_evaluation`): into the run directory for the run's own
    data, into ``RUN/eval/<data folder name>-<hash>`` for other data (:func:`evaluation_dir`).

    Raises:
        InputError: a bad option (``n_bins``, ``device``), another process holds the run, a
            damaged checkpoint or run file; :class:`~sidda.datasets.DataError` for unusable
            data.
    """
    check_bins(n_bins)
    device = str(check_device(device))
    # read before the lock, which would make the folder
    run = run_dir if isinstance(run_dir, TrainedRun) else TrainedRun.open(run_dir)
    out = evaluation_dir(run, data_path)
    with run.dir.lock("evaluate"):
        return _evaluate_locked(run, out, data_path=data_path, checkpoint=checkpoint,
                                device=device, n_bins=n_bins, calibration=calibration,
                                selection=selection, label_free=label_free)


def evaluation_dir(run: TrainedRun | RunDir | str | Path,
                   data_path: str | Path | None = None) -> RunDir:
    """Where :func:`evaluate_run` writes ``metrics.json`` and the per-image arrays.

    The run directory itself for the data the run was trained on (``data_path`` None, that
    folder, or the one its config names); ``RUN/eval/<folder name>-<hash>`` for other data
    (:meth:`~sidda.runs.RunDir.eval_dir`), so that evaluating elsewhere never replaces the
    run's own results, nor one data folder's results another's.

    >>> evaluation_dir("runs/a")
    RunDir('runs/a')
    """
    if data_path is None:
        return run.dir if isinstance(run, TrainedRun) else RunDir.of(run)
    run = run if isinstance(run, TrainedRun) else TrainedRun.open(run)
    return run.dir if run.is_own_data(data_path) else run.dir.eval_dir(data_path)


class _Scored(NamedTuple):
    """One checkpoint's predictions, with what was saved beside its weights."""

    preds: dict[str, Predictions]  #: test_t (and test_s, val_s, val_t when there)
    epoch: int | None
    record: dict | None


def _evaluate_locked(
    run: TrainedRun, out: RunDir, *, data_path: str | Path | None, checkpoint: str, device: str,
    n_bins: int, calibration: bool, selection: bool, label_free: bool,
) -> dict:
    """:func:`evaluate_run` with the run directory locked."""
    info = run.info
    rule = checkpoint if checkpoint in PICK_RULES else None
    if rule is None:
        run.dir.checkpoint(checkpoint)  # a missing checkpoint fails before any work
    elif not run.dir.checkpoints():
        raise FileNotFoundError(
            f"{run.dir.path}: no checkpoints (checkpoints/ holds no model) for the '{rule}' "
            "rule to choose from; train the run again (sidda train --config ... --force)")
    own = run.is_own_data(data_path)
    dcfg = run.data_config(data_path)
    data = evaluation_data(run.cfg, info, own=run.data_config(None),
                           other=None if own else dcfg,
                           validation=calibration or selection or label_free or rule is not None)
    sets = data.val
    scored: dict[str, _Scored] = {}
    candidates = None
    if (selection or rule) and sets is not None and len(sets["val_s"]) and len(sets["val_t"]):
        candidates, skipped = {}, {}
        for name in run.dir.checkpoints():
            scored[name] = _predict_checkpoint(run, name, data, device)
            candidates[name] = checkpoint_scores(**scored[name].preds,
                                                 record=scored[name].record)
            skipped = candidates[name].get("validators_skipped", {}) | skipped
        if skipped:  # the same sizes for every checkpoint: said once
            logger.warning("validators skipped: %s",
                           "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if rule is not None:
        picked = (select_checkpoints(candidates)["rules"].get(rule) if candidates else None)
        if picked is None:
            raise InputError(f"{run.dir.path}: the '{rule}' rule cannot pick a checkpoint "
                             f"({_why_no_pick(rule, candidates, data)}); evaluate a named "
                             "checkpoint instead (final)")
        checkpoint = picked["checkpoint"]
        logger.info("rule %s picks checkpoint %s", rule, checkpoint)
    chosen = scored.get(checkpoint) or _predict_checkpoint(run, checkpoint, data, device)
    report = {
        "method": info.method, "model": info.model, "checkpoint": checkpoint,
        "checkpoint_epoch": chosen.epoch, "data_path": str(Path(dcfg.path).resolve()),
        "n_bins": n_bins, "data_folders": data.folders,
    }
    if rule is not None:
        report["checkpoint_rule"] = rule
    names = None if info.class_names is None else list(info.class_names)
    preds = {dom: chosen.preds[key] for dom, key in (("source", "test_s"), ("target", "test_t"))
             if key in chosen.preds}
    for domain, pred in preds.items():
        report[domain] = domain_metrics(
            pred, num_classes=info.num_classes, class_names=names, n_bins=n_bins,
        )
    if calibration:
        # Source validation logits and labels only: no target label reaches the fit.
        val_s = chosen.preds.get("val_s") or Predictions(
            torch.empty(0, info.num_classes), torch.empty(0, 0), None)
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
            "no validation images (data.val_fraction = 0): nothing to select with"
            if sets is not None else "the run's validation split is not available (notes)")}
    notes = list(data.notes)
    if own and (changed := changed_data(run.dir, run.cfg, quiet=True)):
        notes.append(f"the training data changed since the run was trained "
                     f"({', '.join(changed)}: SHA-256 differs from environment.json); these "
                     "metrics describe the data as it is now")
        logger.warning("%s: %s; restore the data it was trained on (%s) for the run's own "
                       "numbers", run.dir.path, notes[-1], run.cfg.data.path)
    if label_free:
        report["label_free"] = _label_free(chosen.preds, data.source_class_counts, names, notes)
    report["notes"] = notes
    out.publish_evaluation(report, {d: _arrays(p) for d, p in preds.items()},
                           own_folder=out != run.dir)
    return report


def _why_no_pick(rule: str, candidates: dict | None, data: EvaluationData) -> str:
    """Why a label-free rule picked nothing, for its error message."""
    if data.val is None:
        return "the run's validation split is not available: " + "; ".join(data.notes)
    if not candidates:
        return "it needs validation images of both domains (data.val_fraction > 0)"
    skipped = {c["validators_skipped"].get(rule) for c in candidates.values()
               if isinstance(c.get("validators_skipped"), dict)} - {None}
    return ("it could not score any checkpoint: " + "; ".join(sorted(skipped)) if skipped
            else "no checkpoint has a score")


def _label_free(preds: dict[str, Predictions], counts: list[int] | None,
                names: list[str] | None, notes: list[str]) -> dict | None:
    """:func:`label_free_diagnostics` of the target test predictions against the source
    validation ones (none: an empty source side); None, noted, when it cannot be computed."""
    if counts is None:
        return None  # evaluation_data noted why
    test_t, val_s = preds["test_t"], preds.get("val_s")
    if val_s is None:  # no validation split: the source side is empty
        val_s = Predictions(torch.empty(0, test_t.logits.shape[1]),
                            torch.empty(0, test_t.latents.shape[1]), None)
    try:
        return label_free_diagnostics(
            logits_t=test_t.logits, latents_t=test_t.latents, latents_s=val_s.latents,
            logits_s=val_s.logits, labels_s=val_s.labels, source_class_counts=counts,
            class_names=names)
    except InputError as e:
        notes.append(f"label-free diagnostics left out: {e}")
        return None


def _arrays(pred: Predictions) -> dict[str, np.ndarray]:
    """The per-image arrays of one domain (``labels`` only when it has them)."""
    arrays = {"logits": pred.logits.numpy(), "probs": pred.probs.numpy(),
              "latents": pred.latents.numpy()}
    if pred.labels is not None:
        arrays["labels"] = pred.labels.numpy()
    return arrays


def _predict_checkpoint(run: TrainedRun, name: str, data: EvaluationData,
                        device: str) -> _Scored:
    """One checkpoint's predictions on the test sets and the validation sets (those there):
    source images through the source model, target images through the target one (domain
    BatchNorm)."""
    loaded = run.load(name)
    net_s = loaded.exported("source")
    net_t = loaded.exported("target") if loaded.stats is not None else net_s
    val = data.val or {}
    jobs = [("test_s", data.test_s, net_s), ("test_t", data.test_t, net_t),
            ("val_s", val.get("val_s"), net_s), ("val_t", val.get("val_t"), net_t)]
    preds = {key: predict(m, images, device=device, export=False) for key, images, m in jobs
             if images is not None and len(images)}
    return _Scored(preds, loaded.epoch, loaded.record)


def evaluate_runs(
    run_dirs: Sequence[RunDir | str | Path],
    *,
    when: str = "missing",
    checkpoint: str = "final",
    n_bins: int = 15,
    device: str = "cpu",
) -> list[dict]:
    """Evaluate several runs (:func:`evaluate_run`); each run's ``metrics.json``, in order.

    Args:
        run_dirs: Run directories written by :func:`~sidda.experiments.train_run`.
        when: ``"missing"`` evaluates a run whose results are missing, incomplete or damaged
            and keeps the others' ``metrics.json`` as it is, of whichever checkpoint it was
            evaluated (:meth:`RunDir.evaluation <sidda.runs.RunDir.evaluation>`, read once);
            ``"always"`` evaluates every run.
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
    for run in map(RunDir.of, run_dirs):
        metrics = None if when == "always" else run.evaluation()
        if metrics is None:
            logger.info("evaluating %s (checkpoint %s)", run.path, checkpoint)
            metrics = evaluate_run(run, checkpoint=checkpoint, n_bins=n_bins, device=device)
        out.append(metrics)
    return out
