"""The ``sidda`` command line: ``train``, ``evaluate``, ``data make``, ``demo``.

This is the only module that reads argv, loads YAML from the user and configures logging.
Errors in the input (config, data, paths) print one line ``sidda: error: ...`` and exit with
status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sidda import __version__
from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataError

logger = logging.getLogger("sidda")

EXIT_USAGE = 2


class _Progress:
    """A one-line progress display on stderr (off when stderr is not a terminal)."""

    def __init__(self, total_epochs: int, *, enabled: bool) -> None:
        self.total = total_epochs
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, event: str, rec: dict) -> None:
        if not self.enabled:
            return
        if event == "step":
            da = rec.get("da")
            msg = (
                f"\repoch {rec['epoch'] + 1}/{self.total} step {rec['step']} {rec['phase']:<11} "
                f"ce {rec['ce']:.3f}" + ("" if da is None else f" da {da:.4f}")
                + f"  {time.perf_counter() - self.t0:6.0f}s"
            )
            sys.stderr.write(msg.ljust(79)[:79])
            sys.stderr.flush()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("sidda").setLevel(level)


def _cmd_train(args: argparse.Namespace) -> int:
    from sidda.experiments import train_run

    cfg = RunConfig.from_yaml(args.config).override(args.set or [])
    progress = _Progress(cfg.train.epochs, enabled=sys.stderr.isatty() and not args.quiet)
    run_dir = train_run(cfg, argv=sys.argv, force=args.force, callbacks=[progress])
    print(f"trained: {run_dir}")
    if args.evaluate:
        from sidda.experiments import evaluate_run

        report = evaluate_run(run_dir)
        print(_table({run_dir.name: report}))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from sidda.experiments import evaluate_run

    report = evaluate_run(
        args.run_dir, data_path=args.data, checkpoint=args.checkpoint, device=args.device,
        n_bins=args.bins,
    )
    print(_table({Path(args.run_dir).name: report}))
    print(f"wrote {Path(args.run_dir) / 'metrics.json'}")
    return 0


def _cmd_data_make(args: argparse.Namespace) -> int:
    from sidda.generators import make_dataset

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out")
    options = {}
    if args.image_size is not None:
        options["image_size"] = args.image_size
    splits = make_dataset(
        args.name, args.n_per_class, protocol=args.protocol, shift=args.shift,
        random_state=args.seed, **options,
    )
    suffix = {"psf": "_PSF"}.get(splits.params.get("shift") or "", "_noise")
    _write_atomically(out, splits, suffix)
    print(f"wrote {args.name} ({args.protocol} protocol) to {out}")
    return 0


def _write_atomically(out: Path, splits, suffix: str) -> None:  # noqa: ANN001
    """Write a generated data set into a temporary sibling folder, then rename it into place."""
    from sidda.datasets import write_layout

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        arrays = {k: getattr(splits, k) for k in (
            "x_train_s", "y_train_s", "x_test_s", "y_test_s",
            "x_train_t", "y_train_t", "x_test_t", "y_test_t")}
        manifest = dict(splits.params, class_names=list(splits.class_names))
        write_layout(tmp / "d", arrays, target_suffix=suffix, manifest=manifest)
        if out.exists():
            out.rmdir()
        os.replace(tmp / "d", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fmt(v: object) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(reports: dict[str, dict]) -> str:
    """Source and target accuracy, ECE, Brier and NLL of several runs, side by side."""
    cols = ("accuracy", "ece", "brier", "nll")
    head = f"{'run':<24}{'method':<13}" + "".join(
        f"{d[:3]}_{c:<9}" for d in ("source", "target") for c in cols
    )
    lines = [head, "-" * len(head)]
    for name, rep in reports.items():
        cells = [
            _fmt(rep.get(dom, {}).get(c)).ljust(13) for dom in ("source", "target") for c in cols
        ]
        lines.append(f"{name[:23]:<24}{rep.get('method', '?'):<13}" + "".join(cells))
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    from sidda.experiments import evaluate_run, train_run
    from sidda.generators import make_dataset

    keep = args.out is not None
    root = Path(args.out) if keep else Path(tempfile.mkdtemp(prefix="sidda-demo-"))
    if keep and root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; choose another --out")
    t0 = time.perf_counter()
    try:
        data_dir = root / "data"
        logger.info("generating shapes: %d per class per domain (%s protocol)",
                    args.n_per_class, args.protocol)
        splits = make_dataset("shapes", args.n_per_class, protocol=args.protocol,
                              random_state=args.seed, image_size=args.image_size)
        _write_atomically(data_dir, splits, "_noise")
        base = {
            "out_dir": str(root / "runs"),
            "data": {"path": str(data_dir)},
            "model": {"name": args.model},
            "train": {"epochs": args.epochs, "warmup": args.warmup, "seed": args.seed,
                      "batch_size": args.batch_size},
        }
        reports = {}
        for method in ("source_only", "sidda"):
            cfg = RunConfig.from_dict(
                base | {"name": f"{args.model}_{method}", "loss": {"method": method}}
            )
            logger.info("training %s (%s) for %d epochs", args.model, method, args.epochs)
            progress = _Progress(args.epochs, enabled=sys.stderr.isatty() and not args.quiet)
            run_dir = train_run(cfg, argv=sys.argv, callbacks=[progress])
            reports[run_dir.name] = evaluate_run(run_dir, checkpoint=args.checkpoint)
        print(_table(reports))
        acc = [r["target"]["accuracy"] for r in reports.values()]
        print(f"\ntarget accuracy: source-only {acc[0]:.4f} -> SIDDA {acc[1]:.4f} "
              f"({100 * (acc[1] - acc[0]):+.1f} points); checkpoint '{args.checkpoint}'; "
              f"{time.perf_counter() - t0:.0f} s")
        if keep:
            print(f"data and runs kept in {root}")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(
        prog="sidda", description="SInkhorn Dynamic Domain Adaptation for image classifiers."
    )
    p.add_argument("--version", action="version", version=f"sidda {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", parents=[common], help="train a run from a YAML config",
                       description="Train SIDDA or the source-only baseline into out_dir/name.")
    t.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    t.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.epochs=2 model.name=d4")
    t.add_argument("--force", action="store_true", help="replace an existing run directory")
    t.add_argument("--evaluate", action="store_true", help="evaluate the final model afterwards")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", parents=[common], help="test metrics of a trained run",
                       description="Accuracy, ECE, Brier, NLL on source and target test sets; "
                       "writes RUN_DIR/metrics.json and the per-image .npy files.")
    e.add_argument("run_dir")
    e.add_argument("--data", help="data folder (default: the one the run was trained on)")
    e.add_argument("--checkpoint", default="final",
                   choices=("final", "best_val_acc", "best_val_loss"))
    e.add_argument("--device", default="cpu")
    e.add_argument("--bins", type=int, default=15, help="bins of the ECE (default 15)")
    e.set_defaults(func=_cmd_evaluate)

    d = sub.add_parser("data", help="make data sets").add_subparsers(
        dest="data_command", required=True, metavar="ACTION")
    m = d.add_parser("make", parents=[common], help="generate a source/target data set",
                     description="Generate the paper's synthetic sets in the Zenodo layout.")
    m.add_argument("name", choices=("shapes", "astro", "mnist-m"))
    m.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    m.add_argument("--n-per-class", type=int, default=1000, help="base images per class")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--protocol", choices=("clean", "paper"), default="clean",
                   help="clean: disjoint base images per domain and split; paper: targets are "
                   "corrupted copies of the source images")
    m.add_argument("--shift", default=None, help="target shift (mnist-m: noise or psf)")
    m.add_argument("--image-size", type=int, default=None)
    m.set_defaults(func=_cmd_data_make)

    de = sub.add_parser("demo", parents=[common], help="source-only vs SIDDA on small shapes",
                        description="Generate a small shapes set (clean source, Poisson-noise "
                        "target), train the source-only and the SIDDA model, evaluate both and "
                        "print the table.")
    de.add_argument("--out", default=None, help="keep data and runs here (default: temporary)")
    de.add_argument("--model", default="cnn")
    de.add_argument("--n-per-class", type=int, default=500)
    de.add_argument("--image-size", type=int, default=100)
    de.add_argument("--epochs", type=int, default=20)
    de.add_argument("--warmup", type=int, default=5)
    de.add_argument("--batch-size", type=int, default=128)
    de.add_argument("--protocol", choices=("clean", "paper"), default="clean")
    de.add_argument("--checkpoint", default="final",
                    choices=("final", "best_val_acc", "best_val_loss"))
    de.add_argument("--seed", type=int, default=0)
    de.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sidda`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    try:
        return args.func(args)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"sidda: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sidda: interrupted", file=sys.stderr)
        return 130
