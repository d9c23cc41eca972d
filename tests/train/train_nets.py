"""Small models and batches shared by the tests of sidda.train.distributed and .device."""

from __future__ import annotations

import torch
from torch import nn

from sidda.losses import SIDDALoss, SIDDAOutput
from sidda.methods.sidda import SIDDAMethod
from sidda.models import build_model
from sidda.train.step import method_loss


def paper_cnn(*, dropout=0.0, bn_eval=True):
    """The paper's CNN (16 x 16, 3 classes), seeded; BatchNorm in eval mode by default."""
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=3, image_size=16, dropout=dropout)
    if bn_eval:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    return model


def global_batch(n_s, n_t, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(n_s, 1, 16, 16, generator=g)
    y_s = torch.randint(0, 3, (n_s,), generator=g)
    x_t = torch.randn(n_t, 1, 16, 16, generator=g) * 1.5 + 0.5
    return x_s, y_s, x_t


class NoBatchNorm(nn.Module):
    """A small ``(latent, logits)`` classifier without BatchNorm: one image's outputs do not
    depend on the rest of its batch, so a run on two shards can match one process."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                      nn.Flatten(), nn.Linear(64, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        z = self.features(x)  # (B, 16)
        return z, self.head(torch.relu(z))  # (B, 16), (B, 3)


def params(model):
    """A copy of ``model``'s parameters, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def sidda_on_ranks(loss: SIDDALoss, logits_s, y_s, z_s, z_t, ctx) -> SIDDAOutput:
    """``loss`` (its etas and options) on this rank's shards the way training computes it: the
    paper variant's method through the trainer's generic :func:`method_loss` (the batch
    gathered over the ranks). The target logits, unused by SIDDA, are zeros."""
    method = SIDDAMethod(variant="paper")
    method.loss = loss
    logits_t = logits_s.new_zeros(len(z_t), logits_s.shape[1])
    res = method_loss(method, z_s, z_t, logits_s, logits_t, y_s, ctx)
    max_distance = res.logs["max_distance"]
    return SIDDAOutput(total=res.total, ce=res.ce, da=res.da,
                       blur=res.logs.get("blur", loss.sinkhorn.blur_for(max_distance)),
                       max_distance=max_distance, eta_1=loss.eta_1.item(),
                       eta_2=loss.eta_2.item())
