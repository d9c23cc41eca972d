"""Item 3: Sinkhorn cost against batch size, per backend, and what sidda picks.

Debiased Sinkhorn divergence between two clouds of B latents of 256 dimensions (unit-variance
rows, the target shifted), dynamic blur (0.05 x the largest cross distance), scaling 0.9,
forward + backward. Backends: geomloss ``tensorized`` (full B x B matrices) and sidda's
``blocked`` (bounded memory) and ``dense`` (full matrices, the four problems batched; up to
1,024); geomloss's ``online`` and ``multiscale`` need pykeops, which
sidda does not depend on (they are reported as unavailable when it is missing). Memory is the
peak resident set above the level before the call (the kernel's high-water mark).

    python benchmarks/bench_sinkhorn.py            # B = 128 ... 8192
    python benchmarks/bench_sinkhorn.py --quick    # B = 32, 64, for the smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from sidda.losses import (  # noqa: E402
    AUTO_DENSE_MAX,
    AUTO_TENSORIZED_BYTES,
    dynamic_blur,
    resolve_backend,
    sinkhorn_divergence,
)


def _clouds(b: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_s = torch.randn(b, dim, generator=g)
    z_t = torch.randn(b, dim, generator=g) * 1.1 + 0.2
    return z_s, z_t


def measure(b: int, backend: str, dim: int, reps: int) -> tuple[float, float, float]:
    """Median seconds (forward + backward), peak extra MiB, value."""
    z_s, z_t = _clouds(b, dim)
    blur = dynamic_blur(z_s, z_t)
    times, peaks, value = [], [], 0.0
    for _ in range(reps):
        a, c = z_s.clone().requires_grad_(), z_t.clone().requires_grad_()
        with harness.extra_peak_rss(peaks):
            t = harness._timed(lambda a=a, c=c: sinkhorn_divergence(
                a, c, blur=blur, backend=backend).backward())
        times.append(t)
        value = float(sinkhorn_divergence(z_s, z_t, blur=blur, backend=backend))
    return harness.median(times), max(peaks), value


def run(sizes: list[int], dim: int, reps: int, tensorized_max: int, blocked_max: int,
        dense_max: int) -> str:
    rows = []
    for b in sizes:
        r = {}
        for backend, limit in (("dense", dense_max), ("tensorized", tensorized_max),
                               ("blocked", blocked_max)):
            r[backend] = measure(b, backend, dim, reps if b <= 2048 else 1) if b <= limit else None
        vals = [v[2] for v in r.values() if v]
        spread = (max(vals) - min(vals)) / abs(vals[0]) if len(vals) > 1 else float("nan")
        rows.append([b, resolve_backend("auto", b, b)]
                    + [x for v in r.values() for x in ((v[0], v[1]) if v else ("-", "-"))]
                    + [spread])
    keops = importlib.util.find_spec("pykeops") is not None
    head = ["B", "auto picks", "dense s", "dense MiB", "tensorized s", "tensorized MiB",
            "blocked s", "blocked MiB", "value spread"]
    note = (f"`auto` = dense up to {AUTO_DENSE_MAX} points, then tensorized (geomloss) while "
            f"its matrices fit in {AUTO_TENSORIZED_BYTES / 2**20:.0f} MiB, else blocked. Value "
            f"spread = (max - min) / value over the backends. geomloss `online`/`multiscale`: "
            f"{'available' if keops else 'not available (pykeops not installed)'}.")
    return harness.table(rows, head) + "\n\n" + note


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tensorized-max", type=int, default=8192)
    p.add_argument("--blocked-max", type=int, default=8192)
    p.add_argument("--dense-max", type=int, default=1024)
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.quick else a.threads)  # tiny work: thread hand-offs dominate
    if a.quick:
        out = run([32, 64], dim=16, reps=1, tensorized_max=64, blocked_max=64, dense_max=64)
    else:
        out = run([128, 256, 512, 1024, 2048, 4096, 8192], dim=256, reps=3,
                  tensorized_max=a.tensorized_max, blocked_max=a.blocked_max,
                  dense_max=a.dense_max)
    text = (f"## Item 3: Sinkhorn divergence against batch size (forward + backward)\n\n"
            f"{harness.machine_info()}\n\n{out}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
