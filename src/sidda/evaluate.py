"""Evaluate a trained run on the source and target test sets.

``evaluate_run(run_dir, data)`` loads the run's config and checkpoint, runs the (exported)
network on each test domain and writes ``metrics.json`` into the run directory::

    {"method": "sidda" | "source_only", "model": "cnn", "checkpoint": "final",
     "source": {"n": ..., "accuracy": ..., "ece": ..., "brier": ..., "nll": ...,
                "confusion_matrix": [[...]], "report": {...}},
     "target": {...}}

All metrics are fractions computed on the network's own softmax (15-bin ECE, multiclass Brier
summed over classes). Beside it: ``probs_{source,target}.npy`` (N, K),
``labels_{source,target}.npy`` (N,) and ``latents_{source,target}.npy`` (N, 256), in file
order. A target domain without labels gets predictions but no label-based metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sidda import metrics
from sidda.datasets import ImageSet
from sidda.models import export_model
from sidda.runs import atomic_write, write_json

__all__ = ["Predictions", "domain_metrics", "predict"]

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Network outputs on one image set, in file order."""

    logits: Tensor  # (N, K)
    latents: Tensor  # (N, D)
    labels: Tensor | None  # (N,)

    @property
    def probs(self) -> Tensor:
        """Softmax probabilities (N, K)."""
        return self.logits.softmax(1)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: ImageSet,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    export: bool = True,
) -> Predictions:
    """Run ``model`` in eval mode over ``images``.

    Args:
        model: A classifier returning ``(latent, logits)``.
        images: The images to classify.
        batch_size: Images per forward pass.
        device: Where to compute.
        export: Use escnn's ``export()`` (plain PyTorch, same function, faster).
    """
    net = export_model(model) if export else model.eval()
    net.to(device)
    zs, ls = [], []
    for idx in torch.arange(len(images)).split(batch_size):
        z, logits = net(images.x[idx].to(device))
        zs.append(z.float().cpu())
        ls.append(logits.float().cpu())
    return Predictions(torch.cat(ls), torch.cat(zs), images.y)


def domain_metrics(
    pred: Predictions, *, num_classes: int, class_names: list[str] | None = None, n_bins: int = 15
) -> dict:
    """Accuracy, calibration and the classification report of one domain (JSON-ready)."""
    out: dict = {"n": len(pred.logits)}
    if pred.labels is None:
        out["labelled"] = False
        out["predicted_class_counts"] = torch.bincount(
            pred.logits.argmax(1), minlength=num_classes
        ).tolist()
        return out
    probs, y = pred.probs, pred.labels
    preds = probs.argmax(1)
    out.update(
        labelled=True,
        accuracy=float(metrics.accuracy(probs, y)),
        ece=float(metrics.expected_calibration_error(probs, y, n_bins=n_bins)),
        brier=float(metrics.brier_score(probs, y)),
        nll=float(metrics.negative_log_likelihood(probs, y)),
        confusion_matrix=metrics.confusion_matrix(preds, y, num_classes=num_classes).tolist(),
        report=metrics.classification_report(
            preds, y, num_classes=num_classes, class_names=class_names
        ),
    )
    return out


def save_predictions(run_dir: Path, domain: str, pred: Predictions) -> None:
    """Write ``probs_``, ``labels_`` and ``latents_<domain>.npy`` atomically."""
    arrays = {"probs": pred.probs.numpy(), "latents": pred.latents.numpy()}
    if pred.labels is not None:
        arrays["labels"] = pred.labels.numpy()
    for kind, arr in arrays.items():
        import io

        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write(run_dir / f"{kind}_{domain}.npy", buf.getvalue())


def write_metrics(run_dir: Path, report: dict) -> Path:
    """Atomically write ``metrics.json``."""
    return write_json(run_dir / "metrics.json", report)
