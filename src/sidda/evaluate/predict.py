r"""Network outputs: one batched forward pass, predictions of a domain, and its metrics.

Shapes: ``N`` images (C, H, W) in the model's layout (NCHW, as :class:`~sidda.datasets.ImageSet`
holds them), ``D`` latent features, ``K`` classes. A classifier returns ``(latent (B, D),
logits (B, K))`` for a batch (:mod:`sidda.models`).

* :func:`forward_all` - the one batched, eval-mode, no-grad pass over an image set; training
  validation and evaluation both use it;
* :func:`predict` - :class:`Predictions` (logits, latents, labels) of a domain, on the CPU;
* :func:`predict_arrays` - probabilities (optionally temperature-scaled,
  :math:`\mathrm{softmax}(z/T)`), predicted classes and latents of new images, for
  ``sidda predict``;
* :func:`domain_metrics` - accuracy, calibration and the classification report of a domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sidda import metrics
from sidda.datasets import ImageSet, MappedImages
from sidda.errors import InputError, short_repr
from sidda.models import export_model

__all__ = ["NonFiniteOutputs", "Predictions", "domain_metrics", "forward_all", "predict",
           "predict_arrays"]


class NonFiniteOutputs(InputError):
    """Images whose logits are NaN or inf: pixels far outside what the model was trained on.

    Attributes:
        rows: Their indices in the input, in order.
    """

    def __init__(self, rows: list[int]) -> None:
        shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more"
                                                 if len(rows) > 5 else "")
        super().__init__(f"{len(rows)} image(s) give NaN or inf outputs (rows {shown}): their "
                         "pixels are far outside the range the model was trained on")
        self.rows = rows


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


def _to_device(x: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """A batch on ``device`` (asynchronously to a GPU), NHWC in memory if ``channels_last``."""
    fmt = torch.channels_last if channels_last and x.ndim == 4 else torch.preserve_format
    return x.to(device, non_blocking=device.type == "cuda", memory_format=fmt)


@torch.no_grad()
def forward_all(
    model: nn.Module,
    images: ImageSet,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    out_device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Latents and logits of ``model`` on every image of ``images``, in order.

    One forward pass per ``batch_size`` images, without autograd and in ``eval()`` mode (the
    model's previous mode is restored afterwards, also on an error). The model is not moved:
    it must already be on ``device``. Outputs are converted to float32 (a bf16 model gives
    float32 too).

    Args:
        model: A classifier returning ``(latent (B, D), logits (B, K))``; a DDP-wrapped model
            should be unwrapped first (its forward pass may start collectives).
        images: The images (N, C, H, W); a memory-mapped set is read batch by batch.
        batch_size: Images per forward pass, >= 1.
        device: Where the model is and where to compute.
        channels_last: Copy each batch as NHWC in memory (pair with a channels-last model).
        out_device: Where the outputs go; None keeps them on ``device`` (training validation
            goes on computing there), ``"cpu"`` collects them in host memory.

    Returns:
        ``(latents (N, D), logits (N, K))``, float32.

    >>> from sidda.models import build_model
    >>> m = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    >>> z, logits = forward_all(m, ImageSet(torch.zeros(5, 1, 32, 32), None), batch_size=2)
    >>> tuple(z.shape), tuple(logits.shape), m.training
    ((5, 256), (5, 3), True)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {short_repr(batch_size)}")
    if len(images) == 0:
        raise ValueError(f"no images to run the model on ({images.name or 'empty set'})")
    device = torch.device(device)
    out = device if out_device is None else torch.device(out_device)
    was_training = model.training
    model.eval()
    zs, ls = [], []
    try:
        for idx in torch.arange(len(images)).split(batch_size):
            z, logits = model(_to_device(images.x[idx], device, channels_last))  # (B,D), (B,K)
            zs.append(z.float().to(out))
            ls.append(logits.float().to(out))
    finally:
        model.train(was_training)
    return torch.cat(zs), torch.cat(ls)  # (N, D), (N, K)


def predict(
    model: nn.Module,
    images: ImageSet,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    export: bool = True,
) -> Predictions:
    """Run ``model`` in eval mode over ``images``; the outputs are on the CPU.

    Args:
        model: A classifier returning ``(latent, logits)``; moved to ``device``.
        images: The images to classify.
        batch_size: Images per forward pass.
        device: Where to compute.
        export: Use escnn's ``export()`` (plain PyTorch, same function, faster).
    """
    net = export_model(model) if export else model.eval()
    net.to(device)
    z, logits = forward_all(net, images, batch_size=batch_size, device=device, out_device="cpu")
    return Predictions(logits, z, images.y)


def predict_arrays(
    model: nn.Module,
    x: np.ndarray | Tensor | MappedImages,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    temperature: float | None = None,
    latents: bool = False,
    export: bool = True,
) -> dict[str, np.ndarray]:
    r"""Class probabilities and predicted classes of new images (no labels needed).

    The images must be in the model's layout, **(N, C, H, W)**, normalised as the run's
    training data were (what :func:`sidda.datasets.load_domains` yields); an (N, H, W, C)
    array must be transposed first (``x.transpose(0, 3, 1, 2)``). NumPy arrays are converted
    to float32 tensors.

    With ``temperature`` T the probabilities are :math:`\mathrm{softmax}(z / T)`; T is the
    run's source-validation fit (``RunDir.temperature``). T > 0 never changes
    the predicted class.

    Args:
        model: A classifier returning ``(latent, logits)``.
        x: (N, C, H, W) float images.
        batch_size: Images per forward pass.
        device: Where to compute.
        temperature: T > 0 to divide the logits by, or None (T = 1).
        latents: Also return the latents.
        export: Use escnn's ``export()`` (see :func:`predict`).

    Returns:
        ``{"probs": (N, K) float32, "pred": (N,) int64}`` and ``"latents": (N, D) float32``
        when asked for; ``pred`` is the argmax of ``probs``.

    Raises:
        NonFiniteOutputs: some images give NaN or inf logits (their rows are named).

    >>> from sidda.models import build_model
    >>> m = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    >>> out = predict_arrays(m, np.zeros((4, 1, 32, 32), np.float32), temperature=2.0)
    >>> out["probs"].shape, out["pred"].shape
    ((4, 3), (4,))
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    elif isinstance(x, Tensor):
        x = x.float()
    if len(x.shape) != 4:
        raise InputError(
            f"images must be a 4-d array (N, C, H, W), got shape {tuple(x.shape)}; add a "
            "channel axis for grey images (x[:, None]) and transpose (N, H, W, C) arrays with "
            "x.transpose(0, 3, 1, 2)"
        )
    pred = predict(model, ImageSet(x, None), batch_size=batch_size, device=device,
                   export=export)
    bad = (~torch.isfinite(pred.logits).all(1)).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteOutputs(bad)
    probs = metrics.apply_temperature(pred.logits.double(), 1.0 if temperature is None
                                      else temperature)  # (N, K) float64
    out = {"probs": probs.float().numpy(), "pred": probs.argmax(1).numpy()}
    if latents:
        out["latents"] = pred.latents.numpy()
    return out


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
