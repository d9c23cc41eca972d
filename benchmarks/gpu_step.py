"""GPU figures for issue 6: the D4 SIDDA step at the paper's size, and one shapes epoch.

Run through ``benchmarks/gpu.sh`` on a machine with CUDA, or directly::

    python benchmarks/gpu_step.py --device cuda --out gpu_results
    python benchmarks/gpu_step.py --device cpu --quick --out /tmp/smoke   # logic only

Two measurements, written to ``OUT/step.json``, ``OUT/epoch.json`` and ``OUT/results.md``:

* **step**: :func:`sidda.train.step.train_step`, the step that ``fit`` runs, on a D4 model at
  100x100 with 128 source + 128 target images (random images; the time does not depend on
  their content): copy of the batch to the device, one forward pass on ``cat([x_s, x_t])``,
  the SIDDA loss in float32, backward, clipping and AdamW. Four settings: fp32, fp32 +
  channels_last, bf16 autocast, bf16 autocast + channels_last (the default on CUDA). Median
  (and quartiles) of ``--steps`` steps after ``--warmup-steps``, each bracketed by
  ``torch.cuda.synchronize()``; peak allocated memory per setting.
* **epoch**: ``sidda data make shapes --n-per-class 1000 --image-size 100``, then
  ``sidda train --config paper/shapes_d4`` with 2 epochs (1 warm-up, 1 SIDDA)
  for fp32 and for the default (bf16 + channels_last); the SIDDA epoch's ``seconds`` from
  ``history.csv`` (training and validation).

``--quick`` shrinks everything (20x20 images, batches of 4, one timed step) so that the script
runs in seconds on a CPU; its numbers then mean nothing, only that the code runs. On the CPU
bf16 is off whatever the setting (``sidda.train.device.autocast_context``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from sidda.cli import main as sidda_main
from sidda.methods.sidda import SIDDAMethod
from sidda.models import build_model
from sidda.runs import RunDir
from sidda.train import train_step
from sidda.train.collectives import DistContext
from sidda.train.config import DistConfig
from sidda.train.device import to_device
from sidda.train.distributed import prepare_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src" / "sidda" / "configs" / "paper" / "shapes_d4.yaml"
STEP_SETTINGS = {
    "fp32": DistConfig(bf16=False, channels_last=False),
    "fp32+channels_last": DistConfig(bf16=False, channels_last=True),
    "bf16": DistConfig(bf16=True, channels_last=False),
    "bf16+channels_last": DistConfig(bf16=True, channels_last=True),
}
EPOCH_SETTINGS = ("fp32", "bf16+channels_last")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def environment(device: torch.device) -> dict:
    """What the figures depend on: the card, torch, CUDA and the math modes."""
    env = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.type == "cuda":
        env.update(
            gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_tf32=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


def bench_step(device: torch.device, *, model_name: str, image_size: int, batch: int,
               steps: int, warmup_steps: int, prime: bool = True) -> dict:
    """Time ``train_step`` of the model in every setting of ``STEP_SETTINGS``."""
    g = torch.Generator().manual_seed(0)
    x_s = torch.rand(batch, 1, image_size, image_size, generator=g)  # on the host, as in fit
    y_s = torch.randint(0, 3, (batch,), generator=g)
    x_t = torch.rand(batch, 1, image_size, image_size, generator=g)
    ctx = DistContext(device=device)
    results = {}
    # a first, untimed round over all settings takes the one-time costs (lazy kernel loading,
    # library caches) that the first setting would otherwise pay alone
    rounds = [(name, cfg, warmup_steps, 0) for name, cfg in STEP_SETTINGS.items() if prime]
    rounds += [(name, cfg, warmup_steps, steps) for name, cfg in STEP_SETTINGS.items()]
    for name, dist_cfg, warmup_steps, steps in rounds:
        torch.manual_seed(0)
        model = build_model(model_name, in_channels=1, num_classes=3, image_size=image_size)
        cl = bool(dist_cfg.channels_last)
        net = prepare_model(model, ctx, channels_last=cl)
        criterion = SIDDAMethod(eta_mode="faithful").to(device)
        opt = torch.optim.AdamW([{"params": net.parameters()}, *criterion.param_groups()],
                                lr=1e-2, weight_decay=1e-3)
        net.train()
        _reset_peak(device)
        times, skipped = [], 0
        for i in range(warmup_steps + steps):
            _sync(device)
            t0 = time.perf_counter()
            out = train_step(
                net, to_device(x_s, device, channels_last=cl), to_device(y_s, device),
                to_device(x_t, device, channels_last=cl), criterion=criterion, optimizer=opt,
                grad_clip=10.0, ctx=ctx, dist_cfg=dist_cfg)
            _sync(device)
            if i >= warmup_steps:
                times.append(time.perf_counter() - t0)
            skipped += out["skipped"] is not None
        if not steps:
            continue
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        results[name] = {
            "median_ms": 1e3 * statistics.median(times), "q1_ms": 1e3 * q[0],
            "q3_ms": 1e3 * q[2], "images_per_s": 2 * batch / statistics.median(times),
            "peak_mib": _peak_mib(device), "skipped_steps": skipped, "dist": asdict(dist_cfg),
            "last_total": out["total"],
        }
        print(f"step {name:<20} {results[name]['median_ms']:9.1f} ms", file=sys.stderr)
        del net, model, criterion, opt
    return {"model": model_name, "image_size": image_size, "batch": batch,
            "steps": rounds[-1][3],
            "warmup_steps": rounds[-1][2], "settings": results}


def bench_epoch(device: torch.device, out: Path, *, model_name: str, n_per_class: int,
                image_size: int, batch: int | None) -> dict:
    """Make the shapes set, train 2 epochs per setting, read the SIDDA epoch's seconds."""
    data = out / f"shapes_{n_per_class}_{image_size}"
    if not (data / "manifest.json").is_file():
        _run(["data", "make", "shapes", "--n-per-class", str(n_per_class),
              "--image-size", str(image_size), "--out", str(data), "-q"])
    results = {}
    for name in EPOCH_SETTINGS:
        dist_cfg = STEP_SETTINGS[name]
        sets = [f"data.path={data}", f"out_dir={out / 'runs'}", f"name=epoch_{name}",
                f"model.name={model_name}",
                "train.epochs=2", "train.warmup=1", f"dist.bf16={dist_cfg.bf16}",
                f"dist.channels_last={dist_cfg.channels_last}"]
        if batch is not None:
            sets.append(f"train.batch_size={batch}")
        _reset_peak(device)
        _run(["train", "--config", str(CONFIG), "--device", str(device), "--force", "-q",
              "--set", *sets])
        run = RunDir(out / "runs" / f"epoch_{name}")
        hist = run.history()
        epochs = {r["phase"]: r["seconds"] for r in hist.epochs}
        n_steps = sum(r["phase"] == "sidda" for r in hist.steps)
        sizes = run.info().sizes
        results[name] = {"sidda_epoch_s": epochs["sidda"], "warmup_epoch_s": epochs["warmup"],
                         "sidda_steps": n_steps, "peak_mib": _peak_mib(device),
                         "sizes": sizes}
        print(f"epoch {name:<20} {epochs['sidda']:9.1f} s", file=sys.stderr)
    return {"model": model_name, "n_per_class": n_per_class, "image_size": image_size,
            "config": str(CONFIG.name),
            "settings": results}


def _run(argv: list[str]) -> None:
    status = sidda_main(argv)
    if status != 0:
        raise SystemExit(f"gpu_step.py: `sidda {' '.join(argv)}` exited with {status}")


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def table(results: dict) -> str:
    """The results as markdown."""
    env = results["environment"]
    lines = [f"Device: {env.get('gpu', env.get('cpu'))} ({env['device']}), torch {env['torch']}"
             + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}, TF32 matmul "
                f"{env['matmul_tf32']} / cuDNN {env['cudnn_tf32']}" if "cuda" in env else "")
             + f"; {env['date']}."]
    step = results.get("step")
    if step:
        s = step["settings"]
        base = s["fp32"]["median_ms"]
        lines += ["", f"{step['model'].upper()} SIDDA step, {step['image_size']}x"
                  f"{step['image_size']}, "
                  f"{step['batch']} + {step['batch']} images (median of {step['steps']} steps "
                  f"after {step['warmup_steps']}):", "",
                  "| setting | median ms (q1-q3) | images/s | peak MiB | vs fp32 |",
                  "|---|---|---|---|---|"]
        for name, r in s.items():
            lines.append(f"| {name} | {r['median_ms']:.1f} ({r['q1_ms']:.1f}-{r['q3_ms']:.1f})"
                         f" | {r['images_per_s']:,.0f} | {_mib(r['peak_mib'])} | "
                         f"{base / r['median_ms']:.2f}x |")
    epoch = results.get("epoch")
    if epoch:
        lines += ["", f"Shapes, {epoch['model'].upper()} SIDDA, {epoch['image_size']}x"
                  f"{epoch['image_size']}, "
                  f"{epoch['n_per_class']} per class ({epoch['config']}, 2 epochs):", "",
                  "| setting | SIDDA epoch s | steps | warm-up epoch s | peak MiB |",
                  "|---|---|---|---|---|"]
        for name, r in epoch["settings"].items():
            lines.append(f"| {name} | {r['sidda_epoch_s']:.1f} | {r['sidda_steps']} | "
                         f"{r['warmup_epoch_s']:.1f} | {_mib(r['peak_mib'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and write OUT/step.json, OUT/epoch.json, OUT/results.md."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="gpu_results")
    p.add_argument("--only", choices=("step", "epoch"), default=None)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--model", default="d4", help="d4 (the issue's figures) or another name")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30)")
    p.add_argument("--warmup-steps", type=int, default=None, help="untimed first (default 5)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_step.py: CUDA is not available to torch {torch.__version__}; see "
              "benchmarks/gpu.sh", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    size, batch = (20, 4) if quick else (100, 128)  # 20: the smallest shapes image
    results = {"environment": environment(device)}
    if args.only in (None, "step"):
        results["step"] = bench_step(
            device, model_name=args.model, image_size=size, batch=batch,
            steps=args.steps or (1 if quick else 30),
            warmup_steps=args.warmup_steps or (1 if quick else 5), prime=not quick)
        (out / "step.json").write_text(json.dumps(results, indent=2))
    if args.only in (None, "epoch"):
        results["epoch"] = bench_epoch(
            device, out, model_name=args.model, n_per_class=8 if quick else 1000,
            image_size=size, batch=batch if quick else None)  # the config's 128 otherwise
        (out / "epoch.json").write_text(json.dumps(results, indent=2))
    text = table(results)
    (out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
