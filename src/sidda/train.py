"""One training loop for the source-only baseline and for SIDDA (spec section 1).

Per epoch, the source defines the steps (every source image once, shuffled); the target
stream cycles independently, so the two domains may have any sizes. During the ``warmup``
epochs the objective is source cross-entropy alone. After it, SIDDA makes one forward pass on
the concatenated batch ``cat([x_s, x_t])`` (BatchNorm sees both domains, as in the paper) and
minimises :class:`~sidda.losses.SIDDALoss`. Both methods use AdamW, MultiStepLR (stepped per
epoch) and gradient clipping at 10 (the baseline is optimisation-matched, unlike the authors'
scripts).

Validation, every epoch, uses the held-out source split (accuracy, CE) and, for SIDDA after
the warm-up, the DA term between source- and target-validation latents (batch pairs, dynamic
blur). Whenever target validation images exist (the baseline too), two alignment diagnostics
are logged: ``val_js_paper`` (the authors' paired-row JS heuristic) and ``val_sinkhorn_fixed``
(Sinkhorn divergence at a fixed blur, a proper two-sample distance); see
:mod:`sidda.alignment`. Model selection never reads target labels:

* ``best_val_acc``: highest source validation accuracy after the warm-up (ties: earlier);
* ``best_val_loss``: lowest validation CE + DA (unweighted, comparable across epochs) after
  the warm-up;
* ``final``: the last epoch.

Early stopping (``early_stopping`` = patience) counts post-warm-up epochs without improvement
of the validation total loss, and resets on improvement.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sidda.alignment import fixed_blur_sinkhorn, paper_js_distance
from sidda.datasets import ImageSet, batches, cycle_batches
from sidda.losses import LossConfig, SIDDALoss, sinkhorn_divergence
from sidda.models import model_state
from sidda.runs import save_checkpoint, write_csv

__all__ = ["History", "TrainConfig", "fit", "resolve_device"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation options (the paper's values are the defaults).

    Attributes:
        epochs: Number of epochs.
        warmup: Epochs of cross-entropy only before the alignment term starts.
        batch_size: Images per domain per step (128 source + 128 target).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        milestones: Epochs at which the learning rate is multiplied by ``lr_decay``; None gives
            the authors' proportions, ``[epochs // 2, 4 * epochs // 5]`` ([25, 40] for 50).
        lr_decay: MultiStepLR factor.
        grad_clip: Max gradient norm of the model parameters (the etas are not clipped).
        early_stopping: Patience in post-warm-up epochs, or None for no early stopping.
        seed: Seeds the split, the data order, the initial weights and dropout.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        threads: torch intra-op threads on the CPU, or None to keep torch's choice.
    """

    epochs: int = 50
    warmup: int = 5
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 1e-3
    milestones: tuple[int, ...] | None = None
    lr_decay: float = 0.1
    grad_clip: float = 10.0
    early_stopping: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup < self.epochs:
            raise ValueError(
                f"train.warmup must be >= 0 and shorter than train.epochs ({self.epochs}), got "
                f"{self.warmup}; SIDDA aligns the domains only after the warm-up"
            )
        if self.batch_size < 2:
            raise ValueError(f"train.batch_size must be >= 2, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"train.lr must be a positive number, got {self.lr}; the paper uses 1e-2")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"train.lr_decay must lie in (0, 1], got {self.lr_decay}")
        if not self.grad_clip > 0:
            raise ValueError(f"train.grad_clip must be > 0, got {self.grad_clip}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ValueError(
                f"train.early_stopping must be >= 1 or null (off), got {self.early_stopping}"
            )
        if self.milestones is not None:
            object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
            if list(self.milestones) != sorted(set(self.milestones)) or any(
                m < 1 for m in self.milestones
            ):
                raise ValueError(
                    f"train.milestones must be increasing positive epochs, got {self.milestones}"
                )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"train.threads must be >= 1 or null, got {self.threads}")

    def resolved_milestones(self) -> list[int]:
        """The learning-rate milestones actually used."""
        if self.milestones is not None:
            return list(self.milestones)
        return [max(1, self.epochs // 2), max(2, 4 * self.epochs // 5)]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; anything else is checked and returned."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return dev


@dataclass
class History:
    """What a run logged: one dict per epoch and one per step."""

    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    stopped_early: bool = False

    def write(self, run_dir: Path) -> None:
        """Write ``history.csv`` and ``history_steps.csv`` atomically."""
        write_csv(run_dir / "history.csv", self.epochs)
        write_csv(run_dir / "history_steps.csv", self.steps)


Callback = Callable[[str, dict], None]


def _mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@torch.no_grad()
def _forward_all(
    model: nn.Module, images: ImageSet, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    zs, ls = [], []
    for idx in torch.arange(len(images)).split(batch_size):
        z, logits = model(images.x[idx].to(device, non_blocking=True))
        zs.append(z.float())
        ls.append(logits.float())
    return torch.cat(zs), torch.cat(ls)  # (N, D), (N, K)


@torch.no_grad()
def _validate(
    model: nn.Module,
    val_s: ImageSet,
    val_t: ImageSet | None,
    *,
    criterion: SIDDALoss | None,
    with_da: bool,
    batch_size: int,
    device: torch.device,
) -> dict:
    """Source accuracy and CE; for SIDDA after warm-up the DA loss on batch pairs; always the
    two alignment diagnostics when target validation images exist. Target labels unused."""
    model.eval()
    z_s, logits = _forward_all(model, val_s, batch_size, device)
    y_s = val_s.y.to(device)
    out = {
        "val_acc_s": float((logits.argmax(1) == y_s).float().mean()),
        "val_ce": float(F.cross_entropy(logits, y_s)),
        "val_da": None,
    }
    if val_t is not None and len(val_t):
        z_t, _ = _forward_all(model, val_t, batch_size, device)
        if with_da and criterion is not None:
            # the training objective's DA term on (source batch i, target batch i) pairs
            sk, da = criterion.sinkhorn, []
            stream = cycle_batches(len(z_t), batch_size, seed=0)
            for idx in torch.arange(len(z_s)).split(batch_size):
                a, b = z_s[idx], z_t[next(stream)]
                da.append(float(sinkhorn_divergence(
                    a, b, blur=sk.resolve_blur(a, b), scaling=sk.scaling, backend=sk.backend)))
            out["val_da"] = float(np.mean(da))
        out["val_js_paper"] = float(paper_js_distance(z_s, z_t))
        out["val_sinkhorn_fixed"] = float(fixed_blur_sinkhorn(z_s, z_t))
    out["val_total"] = out["val_ce"] + (out["val_da"] or 0.0)
    return out


def fit(
    model: nn.Module,
    train_s: ImageSet,
    train_t: ImageSet | None,
    cfg: TrainConfig,
    *,
    loss: LossConfig = LossConfig(),
    val_s: ImageSet | None = None,
    val_t: ImageSet | None = None,
    run_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Train ``model`` (returning ``(latent, logits)``) with SIDDA or the source-only baseline.

    Args:
        model: The classifier; trained in place.
        train_s: Labelled source training images.
        train_t: Unlabelled target training images (ignored by ``source_only``).
        cfg: Optimisation options.
        loss: Objective; ``loss.method`` picks SIDDA or the baseline.
        val_s: Labelled source validation images (selection and early stopping).
        val_t: Target validation images (validation DA loss); labels are never read.
        run_dir: Folder for checkpoints and histories, or None to keep nothing on disk.
        callbacks: Called as ``cb(event, record)`` with event ``"step"`` or ``"epoch"``.

    Returns:
        The :class:`History`; the model holds the final weights.
    """
    if train_s.y is None:
        raise ValueError("the source training set needs labels")
    criterion = loss.build()
    if criterion is not None and train_t is None:
        raise ValueError("SIDDA needs target training images; pass train_t or use source_only")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model.to(device)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if criterion is not None:
        criterion.to(device)
        groups.append(criterion.param_group())
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=cfg.resolved_milestones(), gamma=cfg.lr_decay
    )
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    hist = History()
    n_steps = math.ceil(len(train_s) / cfg.batch_size)
    stream_t = (
        cycle_batches(len(train_t), cfg.batch_size, seed=cfg.seed) if criterion else None
    )
    best_acc, best_loss, patience_left = -1.0, math.inf, cfg.early_stopping
    params = [p for g in groups[:1] for p in g["params"]]

    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        aligning = criterion is not None and epoch >= cfg.warmup
        phase = "source_only" if criterion is None else ("sidda" if aligning else "warmup")
        lr = optimizer.param_groups[0]["lr"]
        rows: list[dict] = []
        for step, idx_s in enumerate(batches(len(train_s), cfg.batch_size, seed=cfg.seed,
                                             epoch=epoch)):
            x_s = train_s.x[idx_s].to(device, non_blocking=True)
            y_s = train_s.y[idx_s].to(device, non_blocking=True)
            idx_t = next(stream_t) if stream_t is not None else None
            optimizer.zero_grad(set_to_none=True)
            row = {"epoch": epoch, "step": epoch * n_steps + step, "phase": phase, "lr": lr}
            if aligning:
                x_t = train_t.x[idx_t].to(device, non_blocking=True)
                b = len(x_s)
                z, logits = model(torch.cat([x_s, x_t]))  # (B_s + B_t, D), (B_s + B_t, K)
                out = criterion(logits[:b], y_s, z[:b], z[b:])
                objective = out.total
                row.update(ce=out.ce.item(), da=out.da.item(), blur=out.blur,
                           max_distance=out.max_distance)
            else:
                _, logits = model(x_s)
                objective = F.cross_entropy(logits, y_s)
                row.update(ce=objective.item(), da=None, blur=None, max_distance=None)
            objective.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if criterion is not None:
                criterion.before_step()
            optimizer.step()
            if criterion is not None:
                criterion.after_step()
                row.update(eta_1=criterion.eta_1.item(), eta_2=criterion.eta_2.item())
            row["total"] = objective.item()
            rows.append(row)
            for cb in callbacks:
                cb("step", row)
        scheduler.step()
        hist.steps += rows

        rec = {"epoch": epoch, "phase": phase, "lr": lr}
        for key in ("total", "ce", "da", "eta_1", "eta_2", "blur", "max_distance"):
            rec["train_" + key if key in ("total", "ce", "da") else key] = _mean(
                [r.get(key) for r in rows]
            )
        if val_s is not None and len(val_s):
            rec.update(_validate(
                model, val_s, val_t, criterion=criterion, with_da=aligning,
                batch_size=cfg.batch_size, device=device,
            ))
        rec["seconds"] = time.perf_counter() - t0
        hist.epochs.append(rec)

        eligible = criterion is None or epoch >= cfg.warmup
        improved_loss = False
        if eligible and "val_acc_s" in rec:
            if rec["val_acc_s"] > best_acc:
                best_acc = rec["val_acc_s"]
                hist.best["best_val_acc"] = epoch
                _save(run_dir, "best_val_acc", model, criterion, epoch, rec)
            if rec["val_total"] < best_loss:
                best_loss, improved_loss = rec["val_total"], True
                hist.best["best_val_loss"] = epoch
                _save(run_dir, "best_val_loss", model, criterion, epoch, rec)
        logger.info(
            "epoch %d/%d %s  loss %.4f  ce %.4f  da %s  val_acc %s  (%.1fs)",
            epoch + 1, cfg.epochs, phase, rec["train_total"], rec["train_ce"],
            "-" if rec["train_da"] is None else f"{rec['train_da']:.4g}",
            "-" if "val_acc_s" not in rec else f"{rec['val_acc_s']:.4f}", rec["seconds"],
        )
        for cb in callbacks:
            cb("epoch", rec)
        if run_dir is not None:
            hist.write(run_dir)
        if eligible and patience_left is not None and "val_total" in rec:
            patience_left = cfg.early_stopping if improved_loss else patience_left - 1
            if patience_left <= 0:
                logger.info("early stopping after epoch %d: no improvement in %d epochs",
                            epoch + 1, cfg.early_stopping)
                hist.stopped_early = True
                break

    hist.best["final"] = hist.epochs[-1]["epoch"]
    _save(run_dir, "final", model, criterion, hist.epochs[-1]["epoch"], hist.epochs[-1])
    return hist


def _save(
    run_dir: Path | None,
    name: str,
    model: nn.Module,
    criterion: SIDDALoss | None,
    epoch: int,
    record: dict,
) -> None:
    if run_dir is None:
        return
    save_checkpoint(
        run_dir / "checkpoints" / f"{name}.pt",
        {
            "model": model_state(model),
            "loss": None if criterion is None else {
                k: v.detach().cpu() for k, v in criterion.state_dict().items()
            },
            "epoch": epoch,
            "record": record,
        },
    )
