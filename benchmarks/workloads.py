"""The work the benchmarks time, built the same way for every variant.

* :class:`FaithfulCNN`: the paper's CNN written the straightforward way, the
  reference for the speed-ups: ``nn.Sequential`` of Conv-BN-ReLU-MaxPool-Dropout x 3, flatten,
  fc1, LayerNorm, fc2; float32, NCHW, no tricks. Its parameter names are those of sidda's
  ``CNN``, so one ``state_dict`` loads into both.
* :func:`shapes_data`: the shapes set at 100 x 100 (sidda's generator), cached on disk so that
  worker processes load it instead of drawing it again.
* :class:`Trainer` with :meth:`~Trainer.ce_step`, :meth:`~Trainer.sidda_step` and
  :meth:`~Trainer.sidda_epoch`: the training step of ``sidda.train.fit`` (one forward pass on
  ``cat([x_s, x_t])``, SIDDALoss, clipping at 10, AdamW, the eta clamps).
* ``build_*``: what :class:`harness.Workers` calls inside a worker process.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sidda import SIDDALoss, build_model
from sidda.models import prepare_for_training, tune_cpu_allocator

WIDTHS, KERNELS = (8, 16, 32), (5, 3, 3)


class FaithfulCNN(nn.Module):
    """The paper's CNN as written: Conv-BN-ReLU-MaxPool-Dropout x 3 -> fc1 -> LayerNorm -> fc2."""

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int,
                 dropout: float = 0.2, latent_dim: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for width, k in zip(WIDTHS, KERNELS, strict=True):
            layers += [nn.Conv2d(c, width, k, padding=k // 2), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2, 2), nn.Dropout(dropout)]
            c = width
        self.blocks = nn.Sequential(*layers)
        side = image_size // 8  # 100 -> 50 -> 25 -> 12
        self.head = nn.ModuleDict({
            "fc1": nn.Linear(32 * side * side, latent_dim),
            "norm": nn.LayerNorm(latent_dim),
            "fc2": nn.Linear(latent_dim, num_classes),
        })

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.head["norm"](self.head["fc1"](self.blocks(x).flatten(1)))  # (B, D)
        return z, self.head["fc2"](z)  # (B, D), (B, K)


def faithful_copy(model: nn.Module, image_size: int, dropout: float = 0.2) -> FaithfulCNN:
    """A :class:`FaithfulCNN` holding the weights of sidda's ``cnn`` ``model``."""
    ref = FaithfulCNN(in_channels=model.blocks[0].in_channels,
                      num_classes=model.head.fc2.out_features, image_size=image_size,
                      dropout=dropout)
    ref.load_state_dict(model.state_dict())
    return ref


# --------------------------------------------------------------------------- data


def shapes_data(n_per_class: int, image_size: int, seed: int = 0) -> dict[str, Tensor]:
    """Source images and labels and target images of the shapes set, float32 NCHW in [-1, 1].

    Drawn with ``sidda.generators.make_dataset`` (80 % of ``3 n_per_class`` per domain go to
    training) and cached in the temporary directory.
    """
    path = Path(tempfile.gettempdir()) / f"sidda-bench-shapes-{n_per_class}-{image_size}-{seed}.pt"
    if path.is_file():
        return torch.load(path)
    from sidda.generators import make_dataset

    d = make_dataset("shapes", n_per_class, image_size=image_size, random_state=seed)

    def images(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float() * 2 - 1

    data = {"x_s": images(d.x_train_s), "y_s": torch.from_numpy(d.y_train_s).long(),
            "x_t": images(d.x_train_t)}
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)
    return data


# --------------------------------------------------------------------------- training


@dataclass
class Trainer:
    """A model with SIDDA's optimiser set-up (AdamW lr 1e-2, wd 1e-3, etas in their group)."""

    model: nn.Module
    criterion: SIDDALoss
    optimizer: torch.optim.Optimizer

    @classmethod
    def of(cls, model: nn.Module) -> Trainer:
        crit = SIDDALoss()
        opt = torch.optim.AdamW([{"params": list(model.parameters())}, crit.param_group()],
                                lr=1e-2, weight_decay=1e-3)
        return cls(model, crit, opt)

    def _finish(self, loss: Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.criterion.before_step()
        self.optimizer.step()
        self.criterion.after_step()

    def ce_step(self, x: Tensor, y: Tensor) -> float:
        """Plain cross-entropy on all images of the batch."""
        self.optimizer.zero_grad(set_to_none=True)
        _, logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self._finish(loss)
        return loss.item()

    def sidda_step(self, x_s: Tensor, y_s: Tensor, x_t: Tensor) -> float:
        """One SIDDA step: CE on the source + dynamic-blur Sinkhorn + etas, one forward pass."""
        self.optimizer.zero_grad(set_to_none=True)
        b = len(x_s)
        z, logits = self.model(torch.cat([x_s, x_t]))  # (B_s + B_t, D), (B_s + B_t, K)
        out = self.criterion(logits[:b], y_s, z[:b], z[b:])
        self._finish(out.total)
        return out.total.item()

    def sidda_epoch(self, data: dict[str, Tensor], batch: int, seed: int) -> dict[str, float]:
        """One DA epoch over the source (target batches cycle); seconds total and in data."""
        g = torch.Generator().manual_seed(seed)
        n_s, n_t = len(data["x_s"]), len(data["x_t"])
        perm_s, perm_t = torch.randperm(n_s, generator=g), torch.randperm(n_t, generator=g)
        t_data, t0 = 0.0, time.perf_counter()
        for step in range(math.ceil(n_s / batch)):
            t = time.perf_counter()
            idx_s = perm_s[step * batch:(step + 1) * batch]
            idx_t = perm_t[torch.arange(step * batch, step * batch + batch) % n_t]
            x_s, y_s, x_t = data["x_s"][idx_s], data["y_s"][idx_s], data["x_t"][idx_t]
            t_data += time.perf_counter() - t
            self.sidda_step(x_s, y_s, x_t)
        return {"seconds": time.perf_counter() - t0, "data_seconds": t_data}


def sidda_model(name: str, *, image_size: int = 100, seed: int = 0, fused: bool = True,
                dropout: float = 0.2) -> nn.Module:
    """sidda's model ``name`` for 1-channel, 3-class images, seeded."""
    torch.manual_seed(seed)
    m = build_model(name, in_channels=1, num_classes=3, image_size=image_size, dropout=dropout)
    m.fused = fused
    return m.train()


def batch(n: int, image_size: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """``n`` random images in [-1, 1] and labels."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, image_size, image_size, generator=g) * 2 - 1,
            torch.randint(0, 3, (n,), generator=g))


# --------------------------------------------------------------------------- worker builders


def build_cnn_epoch(variant: str, n_per_class: int, image_size: int, batch_size: int):
    """One SIDDA epoch of the ``cnn``: ``"faithful"`` (FaithfulCNN, glibc defaults) or
    ``"sidda"`` (sidda's CNN after ``prepare_for_training``)."""
    data = shapes_data(n_per_class, image_size)
    model = sidda_model("cnn", image_size=image_size)
    if variant == "faithful":
        model = faithful_copy(model, image_size)
    else:
        model = prepare_for_training(model, device="cpu")
    tr = Trainer.of(model.train())
    epochs = iter(range(10**9))
    last: dict = {}

    def run() -> None:
        last.update(tr.sidda_epoch(data, batch_size, seed=next(epochs)))

    run.last = last  # type: ignore[attr-defined]
    return run


def build_step(model: str, variant: str, kind: str, image_size: int, batch_size: int,
               tune_allocator: bool | None = None, compile: bool = False, mkldnn: bool = True):
    """One training step (``kind`` ``"ce"`` on 2 x batch_size images or ``"sidda"`` on
    batch_size + batch_size) of ``model`` in a variant:

    ``"sidda"`` (the default path: fused blocks, tuned allocator), ``"sidda-modules"`` (the
    same model running its modules one by one), ``"faithful"`` (FaithfulCNN, NCHW),
    ``"faithful-cl"`` (FaithfulCNN in channels-last memory). ``tune_allocator`` overrides the
    allocator choice of the variant; ``compile`` wraps the model in torch.compile;
    ``mkldnn=False`` switches oneDNN off (torch's own convolution kernels).
    """
    torch.backends.mkldnn.enabled = mkldnn
    net = sidda_model(model, image_size=image_size, fused=variant == "sidda")
    channels_last = variant == "faithful-cl"
    if variant.startswith("faithful"):
        net = faithful_copy(net, image_size)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
    if tune_allocator if tune_allocator is not None else variant == "sidda":
        tune_cpu_allocator()
    trainer = Trainer.of(net.train())
    if compile:
        trainer.model = torch.compile(net)
    x, y = batch(2 * batch_size, image_size)
    if channels_last:
        x = x.contiguous().as_strided(x.shape, (x.shape[2] * x.shape[3], 1, x.shape[3], 1))
    if kind == "ce":
        return lambda: trainer.ce_step(x, y)
    return lambda: trainer.sidda_step(x[:batch_size], y[:batch_size], x[batch_size:])
