"""Item 4: evaluation throughput of the exported escnn model against the training-mode model.

Images per second of a forward pass without gradients on batches of 256 images, 100 x 100:
the model in training mode (what validation inside a training loop would run without
``eval()``: filters expanded from the basis at every call, batch statistics; on sidda's fused
path and running escnn's modules one by one), in ``eval()``
mode (escnn caches the expanded filters), and the plain-PyTorch copy of ``export_model``,
in NCHW and in channels-last memory. The ``cnn`` is listed for reference.

    python benchmarks/bench_export.py            # d4 and cnn, 3 repetitions
    python benchmarks/bench_export.py --quick    # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import workloads  # noqa: E402

from sidda.models import _channels_last, export_model, tune_cpu_allocator  # noqa: E402


def run(models: list[str], image_size: int, batch: int, reps: int) -> str:
    tune_cpu_allocator()
    x, _ = workloads.batch(batch, image_size)
    x_cl = _channels_last(x)
    rows = []
    for name in models:
        train = workloads.sidda_model(name, image_size=image_size)
        train_modules = workloads.sidda_model(name, image_size=image_size, fused=False)
        evalm = workloads.sidda_model(name, image_size=image_size).eval()
        exported = export_model(evalm)
        exported_cl = export_model(evalm).to(memory_format=torch.channels_last)

        def fwd(m, inp):
            def f():
                with torch.no_grad():
                    m(inp)
            return f

        fns = {"training mode": fwd(train, x), "training mode, modules": fwd(train_modules, x),
               "eval mode": fwd(evalm, x),
               "exported": fwd(exported, x), "exported, channels-last": fwd(exported_cl, x_cl)}
        t = harness.interleave(fns, reps)
        with torch.no_grad():
            diff = float((evalm(x)[1] - exported(x)[1]).abs().max())
        base = harness.median(t["training mode"])
        for k, v in t.items():
            med = harness.median(v)
            rows.append([name, k, batch / med, base / med, diff if k.startswith("exp") else ""])
    return harness.table(rows, ["model", "variant", "images/s", "speed-up vs training mode",
                                "max |logit diff| vs eval"])


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.quick else a.threads)  # tiny work: thread hand-offs dominate
    if a.quick:
        out = run(["d2"], image_size=16, batch=4, reps=1)  # d4's code paths, built faster
    else:
        out = run(["d4", "cnn"], image_size=100, batch=256, reps=3)
    text = (f"## Item 4: evaluation throughput, exported vs training-mode model\n\n"
            f"{harness.machine_info()}\n\n{out}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
