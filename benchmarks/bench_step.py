"""Item 1: the overhead of the method.

A SIDDA step (128 source + 128 target images: one forward pass on the 256, CE on the source,
dynamic-blur Sinkhorn between the two latent batches, learnable etas) against a plain
cross-entropy step on the same 256 images, for ``cnn`` and ``d4`` at 100 x 100, on sidda's
default path. Both steps include backward, clipping and the AdamW update. Target: <= 1.10x.

    python benchmarks/bench_step.py            # cnn 15 and d4 3 repetitions
    python benchmarks/bench_step.py --quick    # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import workloads  # noqa: E402

from sidda.losses import dynamic_blur, sinkhorn_divergence  # noqa: E402
from sidda.models import tune_cpu_allocator  # noqa: E402


def run(models: list[str], reps: dict[str, int], image_size: int, batch: int) -> str:
    tune_cpu_allocator()
    rows = []
    for name in models:
        ce = workloads.build_step(name, "sidda", "ce", image_size, batch)
        da = workloads.build_step(name, "sidda", "sidda", image_size, batch)
        z_s, z_t = torch.randn(batch, 256, requires_grad=True), torch.randn(batch, 256) + 0.3

        def sinkhorn_only(z_s=z_s, z_t=z_t):
            blur = dynamic_blur(z_s, z_t)
            sinkhorn_divergence(z_s, z_t, blur=blur).backward()

        t = harness.interleave({"ce": ce, "sidda": da, "sinkhorn": sinkhorn_only}, reps[name])
        m = {k: harness.median(v) for k, v in t.items()}
        rows.append([name, f"{batch}+{batch}", reps[name], m["ce"], m["sidda"],
                     m["sinkhorn"] * 1e3, m["sidda"] / m["ce"]])
    return harness.table(rows, ["model", "images", "reps", "CE step s", "SIDDA step s",
                                "Sinkhorn fwd+bwd ms", "SIDDA / CE"])


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="cnn,d4")
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.quick else a.threads)  # tiny work: thread hand-offs dominate
    models = a.models.split(",")
    if a.quick:  # d2: the same escnn code paths as d4, built faster
        models = [("d2" if m == "d4" else m) for m in models]
        out = run(models, {m: 1 for m in models}, image_size=16, batch=4)
    else:
        out = run(models, {"cnn": 15, "d4": 3}, image_size=100, batch=128)
    text = f"## Item 1: SIDDA step vs CE step\n\n{harness.machine_info()}\n\n{out}\n"
    print(text)
    return text


if __name__ == "__main__":
    main()
