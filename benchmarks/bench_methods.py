"""The cost of each method's training step, against SIDDA's, with and without domain-specific
BatchNorm statistics, and AdaBN's pass over the target images.

One full step of :func:`sidda.train.step.train_step` (the method's forward passes on B source +
B target images, the method's objective in float32, backward, clipping, AdamW on the model and
the method's own parameters) for SIDDA (paper and robust variants) and the baselines, on the
``cnn`` at S x S, each once with its default BatchNorm setting and once with the other
(``loss.domain_bn``: one concatenated pass, or one pass per domain). Every method has its own
model and optimiser, built from the same seed; the repetitions alternate between all the rows
(A B C ... A B C ...), and the table gives the medians, their ratio to the SIDDA (paper) step
and, for a row with ``domain_bn``, the ratio to the same method with one concatenated pass.
Target: every baseline <= 1.15x; domain_bn no dearer than robust SIDDA's two passes.

The objective column times the objective alone (forward, backward and the AdamW step of the
method's own parameters, on random B + B latents), interleaved with the steps: the part of a
step that differs between methods, far less noisy on a shared machine than a ratio of whole
steps (the same with and without domain_bn).

AdaBN's cost is its pass over the target training images after training
(:func:`sidda.methods.adabn.estimate_target_stats`): timed here on B target images, against a
source-only training step on B source images, so that the ratio is the pass's cost in
training epochs when the two domains have the same size.

    python benchmarks/bench_methods.py            # S=100, B=128, R=15
    python benchmarks/bench_methods.py --quick    # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from sidda import build_model  # noqa: E402
from sidda.methods import LossConfig, StepOutputs, build_method  # noqa: E402
from sidda.methods.adabn import estimate_target_stats  # noqa: E402
from sidda.models import tune_cpu_allocator  # noqa: E402
from sidda.train import train_step  # noqa: E402

#: Row label -> the loss config it times (each method with its default BatchNorm setting).
METHODS = {
    "sidda (paper)": LossConfig(method="sidda", variant="paper"),
    "sidda (robust)": LossConfig(method="sidda", variant="robust"),
    "dan": LossConfig(method="dan"),
    "coral": LossConfig(method="coral"),
    "dann": LossConfig(method="dann"),
    "cdan": LossConfig(method="cdan"),
    "deepjdot": LossConfig(method="deepjdot"),
    "mcc": LossConfig(method="mcc"),
}


def other_bn(loss: LossConfig) -> LossConfig:
    """``loss`` with the other ``domain_bn`` setting."""
    return dataclasses.replace(loss, domain_bn=not loss.domain_bn)


def _label(name: str, loss: LossConfig) -> str:
    return f"{name} {'+' if loss.domain_bn else '-'}dbn"


def build_step(loss: LossConfig | None, image_size: int, batch: int, seed: int = 0):
    """One training step of ``loss``'s method on a fixed batch of B + B random images (None:
    a source-only step on the B source images)."""
    torch.manual_seed(seed)
    net = build_model("cnn", in_channels=1, num_classes=3, image_size=image_size).train()
    method = None if loss is None else build_method(loss, latent_dim=256, num_classes=3)
    groups = [{"params": list(net.parameters())}]
    if method is not None:
        method.attach(net)
        groups += method.param_groups()
    optimizer = torch.optim.AdamW(groups, lr=1e-2, weight_decay=1e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2 * batch, 1, image_size, image_size, generator=g) * 2 - 1
    y = torch.randint(0, 3, (batch,), generator=g)
    x_t = None if method is None else x[batch:]

    def step() -> dict:
        return train_step(net, x[:batch], y, x_t, criterion=method, optimizer=optimizer,
                          grad_clip=10.0, progress=0.5)

    return step


def build_adabn_pass(image_size: int, batch: int, seed: int = 0):
    """AdaBN's estimate of the target statistics on B target images (one batch)."""
    torch.manual_seed(seed)
    net = build_model("cnn", in_channels=1, num_classes=3, image_size=image_size).train()
    g = torch.Generator().manual_seed(2)
    x_t = torch.rand(batch, 1, image_size, image_size, generator=g) * 2 - 1

    def adabn_pass() -> None:
        estimate_target_stats(net, x_t, batch_size=batch)

    return adabn_pass


def build_objective(loss: LossConfig, batch: int, seed: int = 0):
    """The method's objective alone on B + B random LayerNorm latents, backward, own AdamW."""
    torch.manual_seed(seed)
    method = build_method(loss, latent_dim=256, num_classes=3)
    groups = method.param_groups()
    optimizer = torch.optim.AdamW(groups, lr=1e-2, weight_decay=1e-3) if groups else None
    g = torch.Generator().manual_seed(1)
    z = F.layer_norm(torch.randn(2 * batch, 256, generator=g), (256,))
    logits = torch.randn(2 * batch, 3, generator=g)
    y = torch.randint(0, 3, (batch,), generator=g)

    def objective() -> None:
        z_, logits_ = z.clone().requires_grad_(), logits.clone().requires_grad_()
        out = method(StepOutputs(z_s=z_[:batch], z_t=z_[batch:], logits_s=logits_[:batch],
                                 logits_t=logits_[batch:], y_s=y, progress=0.5))
        out.total.backward()
        if optimizer is not None:
            method.before_step()
            optimizer.step()
            method.after_step()
            optimizer.zero_grad(set_to_none=True)

    return objective


def run(image_size: int, batch: int, reps: int) -> str:
    tune_cpu_allocator()
    work = {}
    for name, loss in METHODS.items():
        for cfg in (loss, other_bn(loss)):
            work[_label(name, cfg)] = build_step(cfg, image_size, batch)
        work["objective " + name] = build_objective(loss, batch)
    work["source_only"] = build_step(None, image_size, batch)
    work["adabn pass"] = build_adabn_pass(image_size, batch)
    times = harness.interleave(work, reps)
    med = {name: harness.median(t) for name, t in times.items()}
    ref = med[_label("sidda (paper)", METHODS["sidda (paper)"])]
    rows = []
    for name, loss in METHODS.items():
        one, two = sorted((loss, other_bn(loss)), key=lambda c: c.domain_bn)
        for cfg in (one, two):
            label = _label(name, cfg)
            vs_one = med[label] / med[_label(name, one)] if cfg.domain_bn else "-"
            rows.append([label, f"{batch}+{batch}", reps, med[label], med[label] / ref, vs_one,
                         med["objective " + name] * 1e3])
    table = harness.table(rows, ["method", "images", "reps", "step s (median)", "/ SIDDA",
                                 "/ one pass", "objective fwd+bwd ms"])
    adabn = harness.table(
        [["source_only step", batch, reps, med["source_only"], 1.0],
         ["adabn pass", batch, reps, med["adabn pass"],
          med["adabn pass"] / med["source_only"]]],
        ["work", "images", "reps", "s (median)", "/ source-only step"])
    return f"{table}\n\n{adabn}"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=100, help="image side S")
    p.add_argument("--batch", type=int, default=128, help="images per domain B")
    p.add_argument("--reps", type=int, default=15, help="repetitions R")
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.quick else a.threads)  # tiny work: thread hand-offs dominate
    if a.quick:
        out = run(image_size=16, batch=4, reps=1)
    else:
        out = run(image_size=a.size, batch=a.batch, reps=a.reps)
    text = (f"## Methods: one training step vs SIDDA's\n\n{harness.machine_info()}\n\n"
            f"{out}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
