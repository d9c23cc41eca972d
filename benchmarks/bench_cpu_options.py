"""Item 5: what the CPU offers, tried one by one on the ``cnn`` SIDDA step.

One SIDDA step (128 + 128 images, 100 x 100; forward, SIDDALoss, backward, clipping, AdamW) in
one worker process per setting, the parent alternating steps between the workers. Ratios are
against the faithful plain model (``workloads.FaithfulCNN``, NCHW, glibc's default malloc, 2
threads) measured in the same rounds. torch.compile's first step (the compilation) is reported
separately; its workers run in a second group with their own baseline.

    python benchmarks/bench_cpu_options.py             # 5 repetitions
    python benchmarks/bench_cpu_options.py --quick     # tiny sizes, in-process, no compile
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Spec, Workers  # noqa: E402

THP = {"THP_MEM_ALLOC_ENABLE": "1"}
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


def _spec(variant: str, size: int, batch: int, threads: int = 2, env: dict | None = None,
          **options) -> Spec:
    return Spec("workloads", "build_step",
                dict(model="cnn", variant=variant, kind="sidda", image_size=size,
                     batch_size=batch, **options), env=env or {}, threads=threads)


def groups(size: int, batch: int, threads: int, with_compile: bool) -> list[dict[str, Spec]]:
    t1 = 1 if threads > 1 else threads
    first = {
        "faithful (NCHW, glibc malloc)": _spec("faithful", size, batch, threads),
        "faithful + tuned malloc": _spec("faithful", size, batch, threads, tune_allocator=True),
        "faithful + THP_MEM_ALLOC_ENABLE=1": _spec("faithful", size, batch, threads, env=THP),
        "faithful, channels-last": _spec("faithful-cl", size, batch, threads),
        "faithful, oneDNN off": _spec("faithful", size, batch, threads, mkldnn=False),
        f"faithful, {t1} thread": _spec("faithful", size, batch, t1),
        "faithful + OMP_WAIT_POLICY=PASSIVE": _spec("faithful", size, batch, threads,
                                                    env=PASSIVE),
        "sidda CNN modules (in-place ReLU)": _spec("sidda-modules", size, batch, threads),
        "sidda fused, glibc malloc": _spec("sidda", size, batch, threads, tune_allocator=False),
        "sidda fused + THP_MEM_ALLOC_ENABLE=1": _spec("sidda", size, batch, threads,
                                                      tune_allocator=False, env=THP),
        "sidda default (fused + tuned malloc)": _spec("sidda", size, batch, threads),
        f"sidda default, {t1} thread": _spec("sidda", size, batch, t1),
        "sidda default + OMP_WAIT_POLICY=PASSIVE": _spec("sidda", size, batch, threads,
                                                         env=PASSIVE),
    }
    out = [first]
    if with_compile:
        out.append({
            "faithful (NCHW, glibc malloc)": _spec("faithful", size, batch, threads),
            "faithful + torch.compile": _spec("faithful", size, batch, threads, compile=True),
            "faithful channels-last + torch.compile": _spec("faithful-cl", size, batch, threads,
                                                            compile=True),
            "sidda default (fused + tuned malloc)": _spec("sidda", size, batch, threads),
            "sidda default + torch.compile": _spec("sidda", size, batch, threads,
                                                   compile=True),
        })
    return out


def run(size: int, batch: int, reps: int, threads: int, *, with_compile: bool,
        inprocess: bool) -> str:
    rows = []
    for group_id, specs in enumerate(groups(size, batch, threads, with_compile)):
        try:
            with Workers(specs, inprocess=inprocess) as w:
                times = w.interleave(reps)
                peak = w.peak_mib()
                warm = w.warmup_s
        except Exception as err:  # a setting that does not run here is a result too
            rows.append([f"group {group_id + 1}", "failed", str(err)[:80], "", "", ""])
            continue
        base = harness.median(times["faithful (NCHW, glibc malloc)"])
        for name, t in times.items():
            med = harness.median(t)
            rows.append([name, group_id + 1, med, base / med, warm[name], peak[name]])
    return harness.table(rows, ["setting", "group", "step s (median)", "speed-up vs faithful",
                                "first step s", "peak RSS MiB"])


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, in-process, no compile")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile group")
    a = p.parse_args(argv)
    if a.quick:
        torch.set_num_threads(1)
        out = run(24, 4, 1, 1, with_compile=False, inprocess=True)
    else:
        out = run(100, 128, a.reps, a.threads, with_compile=not a.no_compile, inprocess=False)
    text = (f"## Item 5: CPU settings on the cnn SIDDA step (128 + 128, 100x100)\n\n"
            f"{harness.machine_info()}\n\n{out}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
