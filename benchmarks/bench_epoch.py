"""Item 2: DA epoch time of the ``cnn`` and step time of ``d4`` against a faithful plain model.

``cnn``: one SIDDA epoch on shapes, 100 x 100, 2,400 source + 2,400 target images, batches of
128 + 128 (19 steps), 2 threads: :class:`workloads.FaithfulCNN` (the paper's CNN written plainly,
float32, NCHW, glibc's default malloc) against sidda's ``CNN`` after ``prepare_for_training``
(fused channels-last blocks, tuned malloc), same weights, same data, same loop. Each variant
runs in its own worker process (malloc settings hold per process); the parent alternates
epochs between them. Before timing, both models are checked to compute the same function.

``d4``: one 128 + 128 SIDDA step, escnn's modules against the fused path, and the rate of
d4's convolutions against this CPU's float32 matrix-multiply rate.

    python benchmarks/bench_epoch.py              # cnn 5 epochs each, d4 3 steps each
    python benchmarks/bench_epoch.py --quick      # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import workloads  # noqa: E402
from harness import Spec, Workers  # noqa: E402

MODULE = "workloads"


# --------------------------------------------------------------------------- equivalence


def _grads_and_outputs(model, x, y, dtype):
    m = copy.deepcopy(model).to(dtype).train()
    z, logits = m(x.to(dtype))
    F.cross_entropy(logits, y).backward()
    grads = {n: p.grad.double() for n, p in m.named_parameters() if p.grad is not None}
    m.eval()
    with torch.no_grad():
        _, eval_logits = m(x.to(dtype))
    stats = {n: b.double() for n, b in m.named_buffers() if "running" in n}
    return z.double(), logits.double(), grads, eval_logits.double(), stats


def equivalence(image_size: int, n: int) -> list[list]:
    """Max relative differences, sidda's fused CNN vs FaithfulCNN, same weights, dropout 0 in
    training (random masks differ by construction) and the full model in eval mode."""
    model = workloads.sidda_model("cnn", image_size=image_size, dropout=0.0)
    with torch.no_grad():  # move BN away from its init, with some decreasing channels
        for i in (1, 6, 11):
            model.blocks[i].weight.copy_(torch.randn(model.blocks[i].weight.shape))
            model.blocks[i].bias.copy_(0.3 * torch.randn(model.blocks[i].bias.shape))
    ref = workloads.faithful_copy(model, image_size, dropout=0.0)
    x, y = workloads.batch(n, image_size, seed=3)
    rows = []
    for dtype in (torch.float64, torch.float32):
        a = _grads_and_outputs(ref, x, y, dtype)
        b = _grads_and_outputs(model, x, y, dtype)

        def rel(u, v):
            return float((u - v).detach().abs().max() / v.detach().abs().max().clamp_min(1e-30))

        # conv biases before BatchNorm have a zero gradient: only rounding noise to compare
        skip = {"blocks.0.bias", "blocks.5.bias", "blocks.10.bias"}
        rows.append([str(dtype).replace("torch.", ""), n, rel(b[0], a[0]), rel(b[1], a[1]),
                     max(rel(b[2][k], a[2][k]) for k in a[2] if k not in skip),
                     rel(b[3], a[3]), max(rel(b[4][k], a[4][k]) for k in a[4])])
    return rows


# --------------------------------------------------------------------------- d4


def conv_rates(image_size: int, batch: int, reps: int, matmul_n: int
               ) -> tuple[list[list], float, float]:
    """fwd+bwd GFLOP/s of d4's three convolutions (64, 128, 256 channels), NCHW and
    channels-last, each alternating with a float32 matrix multiply (n x n) so that both rates
    see the same machine; returns rows and the conv FLOP-weighted fraction of the matmul rate
    (NCHW, channels-last)."""
    from sidda.models import _channels_last

    shapes = [(1, 64, 5, image_size), (64, 128, 3, image_size // 2),
              (128, 256, 3, image_size // 4)]
    a, b = torch.randn(matmul_n, matmul_n), torch.randn(matmul_n, matmul_n)
    rows, total, mm_s = [], {"nchw": 0.0, "cl": 0.0}, []
    for ci, co, k, s in shapes:
        flops = 2 * batch * co * s * s * ci * k * k * (2 if ci == 1 else 3)  # fwd + wgrad (+ dgrad)
        fns = {}
        for fmt in ("nchw", "cl"):
            x = torch.randn(batch, ci, s, s)
            x = (_channels_last(x) if fmt == "cl" else x).requires_grad_(ci > 1)
            w = torch.randn(co, ci, k, k, requires_grad=True)
            g = torch.randn(batch, co, s, s)
            g = _channels_last(g) if fmt == "cl" else g

            def fn(x=x, w=w, g=g, pad=k // 2):
                F.conv2d(x, w, padding=pad).backward(g)

            fns[fmt] = fn
        fns["matmul"] = lambda: a @ b
        t = harness.interleave(fns, reps)
        med = {f: harness.median(v) for f, v in t.items()}
        mm = 2 * matmul_n**3 / med["matmul"] / 1e9
        total["nchw"] += med["nchw"] * mm
        total["cl"] += med["cl"] * mm
        mm_s.append(mm)
        rows.append([f"{ci}->{co} k{k} {s}x{s}", flops / 1e9, med["nchw"],
                     flops / med["nchw"] / 1e9, med["cl"], flops / med["cl"] / 1e9, mm])
    flops = sum(r[1] for r in rows)
    return rows, flops / total["nchw"], flops / total["cl"]


def build_d4_step(variant: str, image_size: int, batch: int, model: str = "d4"):
    """Worker builder: one d4 SIDDA step; ``"escnn"`` runs escnn's modules with glibc's
    default malloc, ``"sidda"`` the default path."""
    return workloads.build_step(model, "sidda" if variant == "sidda" else "sidda-modules",
                                "sidda", image_size, batch)


# --------------------------------------------------------------------------- main


def run(*, n_per_class: int, image_size: int, batch: int, epoch_reps: int, d4_reps: int,
        d4_batch: int, threads: int, inprocess_d4: bool = False, d4: str = "d4",
        matmul_n: int = 2048) -> str:
    out = [f"## Item 2: epoch and step time against a faithful plain implementation\n\n"
           f"{harness.machine_info()}\n"]
    rows = equivalence(image_size, n=min(64, 2 * batch))
    out.append("Same function (max relative difference, fused sidda CNN vs FaithfulCNN, same "
               "weights, batch statistics; dropout 0 in training):\n\n" + harness.table(
                   rows, ["dtype", "images", "latent", "logits", "grads (worst param)",
                          "eval logits", "running stats"]))

    t0 = time.perf_counter()
    workloads.shapes_data(n_per_class, image_size)  # draw once, workers load the cache
    gen_s = time.perf_counter() - t0
    specs = {v: Spec(MODULE, "build_cnn_epoch", dict(variant=v, n_per_class=n_per_class,
                                                      image_size=image_size, batch_size=batch),
                     threads=threads) for v in ("faithful", "sidda")}
    with Workers(specs) as w:
        times = w.interleave(epoch_reps)
        peak = w.peak_mib()
    data = workloads.shapes_data(n_per_class, image_size)
    n_s = len(data["x_s"])
    steps = -(-n_s // batch)
    med = {k: harness.median(v) for k, v in times.items()}
    # data loading share, measured here on the same indexing as the epoch loop
    tr_idx = torch.randperm(n_s)[:batch]
    t_data = harness.median(harness.interleave(
        {"d": lambda: (data["x_s"][tr_idx], data["y_s"][tr_idx], data["x_t"][tr_idx])},
        20)["d"])
    rows = [[v, f"{n_s}+{len(data['x_t'])}", steps, epoch_reps, med[v], med[v] / steps,
             peak[v]] for v in ("faithful", "sidda")]
    out.append(f"`cnn` DA epoch, {image_size}x{image_size}, batch {batch}+{batch}, {threads} "
               f"threads (data drawn in {gen_s:.0f} s, cached):\n\n" + harness.table(
                   rows, ["variant", "images", "steps", "epochs", "epoch s", "step s",
                          "peak RSS MiB (whole worker)"]))
    out.append(f"Speed-up of the epoch: **{med['faithful'] / med['sidda']:.2f}x**; data "
               f"loading (index + gather of one batch pair) {t_data * 1e3:.1f} ms = "
               f"{100 * t_data / (med['sidda'] / steps):.1f} % of a fast step.")

    specs = {v: Spec("bench_epoch", "build_d4_step", dict(variant=v, image_size=image_size,
                                                          batch=d4_batch, model=d4),
                     threads=threads)
             for v in ("escnn", "sidda")}
    with Workers(specs, inprocess=inprocess_d4) as w:
        times = w.interleave(d4_reps)
        peak = w.peak_mib()
    med = {k: harness.median(v) for k, v in times.items()}
    rows = [[v, f"{d4_batch}+{d4_batch}", d4_reps, med[v], peak[v]] for v in ("escnn", "sidda")]
    out.append(f"`d4` SIDDA step, {image_size}x{image_size}:\n\n" + harness.table(
        rows, ["variant", "images", "reps", "step s", "peak RSS MiB"]))
    conv_rows, frac_nchw, frac_cl = conv_rates(image_size, 2 * d4_batch, max(3, d4_reps),
                                               matmul_n)
    out.append(f"d4 convolutions, forward + backward on {2 * d4_batch} images, each alternating "
               f"with a {matmul_n}x{matmul_n} float32 matrix multiply:\n\n" + harness.table(
                   conv_rows, ["conv", "GFLOP", "NCHW s", "NCHW GFLOP/s", "channels-last s",
                               "channels-last GFLOP/s", "matmul GFLOP/s"]))
    out.append(f"d4's convolutions run at {frac_nchw:.0%} of this CPU's matrix-multiply rate in "
               f"NCHW (escnn's layout) and {frac_cl:.0%} channels-last (the fused path).")
    return "\n\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.quick else a.threads)  # tiny work: thread hand-offs dominate
    if a.quick:
        text = run(n_per_class=4, image_size=24, batch=4, epoch_reps=1, d4_reps=1, d4_batch=2,
                   threads=1, inprocess_d4=True, d4="d2", matmul_n=256)
    else:
        text = run(n_per_class=1000, image_size=100, batch=128, epoch_reps=5, d4_reps=3,
                   d4_batch=128, threads=a.threads)
    print(text)
    return text


if __name__ == "__main__":
    main()
