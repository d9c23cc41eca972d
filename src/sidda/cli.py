"""The ``sidda`` command line: ``train``, ``evaluate``, ``data make|import-folder|check|show``,
``demo``.

This is the only module that reads argv, loads YAML from the user and configures logging.
Errors in the input (config, data, options, paths, a run in use by another process) print one
line ``sidda: error: ...`` and exit with status 2; a run that diverges (non-finite) or cannot
write its files exits with status 1, and so does an internal error (a bug), which says so; a
run stopped by SIGTERM or SIGINT saves ``last.pt`` and exits with 128 + the signal number
(143, 130), to be continued with ``sidda train --resume RUN_DIR``.

``torchrun --nproc_per_node=N -m sidda train ...`` trains on N processes
(``docs/distributed.md``): rank 0 logs at the chosen level, shows the progress line and prints
the results; the other ranks log warnings only, prefixed with their rank.
"""

from __future__ import annotations

import argparse
import errno
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sidda import __version__
from sidda.config import RunConfig
from sidda.errors import InputError, one_line, short_repr
from sidda.recovery import NonFiniteError, TrainingInterrupted

logger = logging.getLogger("sidda")

EXIT_FAILURE = 1
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


def _setup_logging(quiet: bool, verbose: bool, *, prefix: str = "") -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format=prefix + "%(message)s", stream=sys.stderr,
                        force=True)
    logging.getLogger("sidda").setLevel(level)


def _cmd_train(args: argparse.Namespace) -> int:
    from sidda.distributed import init_distributed, shutdown
    from sidda.experiments import resume_run, train_run

    if args.resume is not None:
        if args.set or args.force:
            raise InputError(
                "--resume continues with the run's own config.yaml; drop --set and --force (to "
                "change settings, start a new run with --config)"
            )
        cfg_path = Path(args.resume) / "config.yaml"  # resume_run explains a missing one
        cfg = RunConfig.from_yaml(cfg_path) if cfg_path.is_file() else RunConfig()
    else:
        cfg = RunConfig.from_yaml(args.config).override(args.set or [])
        if args.device is not None:
            cfg = cfg.override([f"train.device={args.device!r}"])
    ctx = init_distributed(args.device or cfg.train.device, timeout_s=cfg.dist.timeout_s)
    try:
        if ctx.is_distributed:
            _setup_logging(args.quiet or not ctx.is_main, args.verbose and ctx.is_main,
                           prefix=f"rank {ctx.rank}: " if ctx.rank else "")
        show = ctx.is_main and sys.stderr.isatty() and not args.quiet
        progress = [_Progress(cfg.train.epochs, enabled=show)] if ctx.is_main else []
        if args.resume is not None:
            run_dir = resume_run(args.resume, argv=args.argv, callbacks=progress, ctx=ctx,
                                 device=args.device)
        else:
            run_dir = train_run(cfg, argv=args.argv, force=args.force, callbacks=progress,
                                ctx=ctx)
    finally:
        shutdown()
    if not ctx.is_main:
        return 0
    print(f"trained: {run_dir}")
    if args.evaluate:
        from sidda.experiments import evaluate_run

        report = evaluate_run(run_dir, device=str(ctx.device))
        print(_table({run_dir.name: report}))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from sidda.experiments import evaluate_run, evaluation_dir

    report = evaluate_run(
        args.run_dir, data_path=args.data, checkpoint=args.checkpoint, device=args.device,
        n_bins=args.bins,
    )
    print(_table({Path(args.run_dir).name: report}))
    print(_calibration_lines(report))
    print(f"wrote {evaluation_dir(args.run_dir, args.data) / 'metrics.json'}")
    return 0


def _calibration_lines(report: dict) -> str:
    """Temperature scaling, paper-compatible numbers and label-free selection, as text."""
    lines = []
    temp = (report.get("temperature") or {}).get("value")
    if temp is not None:
        lines.append(f"temperature T = {temp:.3f} (fitted on the source validation split)")
        for dom in ("source", "target"):
            d = report.get(dom, {})
            ts = d.get("temperature_scaled")
            if ts:
                lines.append(f"  {dom:<7} ECE {d['ece']:.4f} -> {ts['ece']:.4f}   Brier "
                             f"{d['brier']:.4f} -> {ts['brier']:.4f}   NLL {d['nll']:.4f} -> "
                             f"{ts['nll']:.4f}")
    for dom in ("source", "target"):
        pc = report.get(dom, {}).get("paper_compatible") or {}
        if "probe_ece" in pc:
            lines.append(f"paper-compatible {dom:<7} (LR probe, out of fold): accuracy "
                         f"{pc['probe_accuracy']:.4f}  ECE(paper) {pc['probe_ece']:.4f}  "
                         f"Brier/K {pc['probe_brier']:.4f}")
    rules = (report.get("selection") or {}).get("rules") or {}
    if rules:
        lines.append("label-free checkpoint selection (target accuracy of the pick; the "
                     "oracle reads target labels):")
        cells = [f"{k:<13} {_fmt(v.get('target_accuracy'))} ({v['checkpoint']})"
                 for k, v in rules.items()]
        lines += ["  " + "   ".join(c.ljust(36) for c in cells[i : i + 3]).rstrip()
                  for i in range(0, len(cells), 3)]
    return "\n".join(lines)


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


def _data_config(args: argparse.Namespace):  # noqa: ANN202 - DataConfig
    from sidda.formats import resolve_data_config

    options = {"memory_budget_mb": args.memory_budget_mb}
    if args.image_size is not None:
        options["image_size"] = args.image_size
    return resolve_data_config(args.dir, layout=args.layout, source_suffix=args.source_suffix,
                               target_suffix=args.target_suffix, **options)


def _cmd_data_import(args: argparse.Namespace) -> int:
    from sidda.formats import import_image_folders

    out = import_image_folders(
        args.source, args.target, args.out, image_size=args.image_size,
        test_fraction=args.test_fraction, random_state=args.seed, fit=args.fit,
        channels=args.channels,
    )
    print(f"wrote {out}; train on it with  data: {{path: {out}, target_suffix: _target}}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from sidda.datasets import write_manifest
    from sidda.formats import check_data, format_summary

    cfg = _data_config(args)
    print(format_summary(check_data(cfg, verify=args.verify)))
    if args.write_manifest:
        root = Path(cfg.path)
        if (root / "manifest.json").exists():
            print(f"{root / 'manifest.json'} exists; left unchanged")
        else:
            path = write_manifest(root, layout=cfg.layout, source_suffix=cfg.source_suffix,
                                  target_suffix=cfg.target_suffix,
                                  extra={"generator": None, "written_by": "sidda data check"})
            print(f"wrote {path}")
    return 0


def _cmd_data_show(args: argparse.Namespace) -> int:
    from sidda.datasets import load_domains
    from sidda.formats import sample_grid

    cfg = _data_config(args)
    data = load_domains(cfg, splits=("train",))
    names = data.manifest.get("class_names")
    fig = sample_grid(data, per_class=args.per_class, random_state=args.seed, scale=args.scale,
                      class_names=list(names) if isinstance(names, list) else None,
                      title=f"{Path(cfg.path).name}: training images, rows = classes")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")
    return 0


def _write_atomically(out: Path, splits, suffix: str) -> None:  # noqa: ANN001
    """Write a generated data set into a staging sibling folder, then rename it into place."""
    from sidda.datasets import write_layout
    from sidda.runs import atomic_dir

    arrays = {k: getattr(splits, k) for k in (
        "x_train_s", "y_train_s", "x_test_s", "y_test_s",
        "x_train_t", "y_train_t", "x_test_t", "y_test_t")}
    manifest = dict(splits.params, class_names=list(splits.class_names))
    with atomic_dir(out) as tmp:
        write_layout(tmp, arrays, target_suffix=suffix, manifest=manifest)


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


def _need_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("figures need matplotlib; install it with: pip install 'sidda[plot]'")


def _cmd_report(args: argparse.Namespace) -> int:
    from sidda.report import write_report

    _need_matplotlib()
    out = write_report(
        args.run_dirs, args.out, title=args.title,
        evaluate="always" if args.reevaluate else "missing", checkpoint=args.checkpoint,
        n_bins=args.bins, device=args.device, isomap_points=args.isomap_points,
    )
    print(f"wrote {out}")
    return 0


def _split_list(text: str, kind: type = str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise InputError(
            f"expected a comma-separated list of {kind.__name__}, got {short_repr(text)}"
        ) from None


def _cmd_sweep(args: argparse.Namespace) -> int:
    from sidda.sweep import format_table, run_sweep

    _need_matplotlib()
    cfg = RunConfig.from_yaml(args.config).override(args.set or [])
    progress = _Progress(cfg.train.epochs, enabled=sys.stderr.isatty() and not args.quiet)
    res = run_sweep(
        cfg, models=_split_list(args.models), seeds=_split_list(args.seeds, int),
        methods=_split_list(args.methods), out=args.out, checkpoint=args.checkpoint,
        force=args.force, report=not args.no_report, argv=sys.argv, callbacks=[progress],
    )
    print(format_table(res.rows))
    for what, path in (("summary", res.out / "summary.csv"), ("figure", res.figure),
                       ("report", res.report)):
        if path is not None:
            print(f"{what}: {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from sidda.compare import parse_data, run_compare

    _need_matplotlib()
    cfg = RunConfig.from_yaml(args.config).override(args.set or [])
    progress = _Progress(cfg.train.epochs, enabled=sys.stderr.isatty() and not args.quiet)
    res = run_compare(
        cfg, data=parse_data(args.data), methods=_split_list(args.methods),
        seeds=_split_list(args.seeds, int), out=args.out, model=args.model,
        checkpoint=args.checkpoint, force=args.force, report=not args.no_report, argv=args.argv,
        callbacks=[progress],
    )
    print(res.text, end="")
    for what, path in (("table", res.out / "compare.md"), ("runs", res.out / "compare.csv"),
                       ("report", res.report)):
        if path is not None:
            print(f"{what}: {path}")
    return 0


#: The demo's runs: run-name suffix -> loss section.
DEMO_METHODS = {
    "source_only": {"method": "source_only"},
    "sidda_paper": {"method": "sidda", "variant": "paper"},
    "sidda_robust": {"method": "sidda", "variant": "robust"},
}


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
        logger.info("generating %s: %d per class per domain (%s protocol)",
                    args.dataset, args.n_per_class, args.protocol)
        splits = make_dataset(args.dataset, args.n_per_class, protocol=args.protocol,
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
        for label, loss in DEMO_METHODS.items():
            cfg = RunConfig.from_dict(base | {"name": f"{args.model}_{label}", "loss": loss})
            logger.info("training %s (%s) for %d epochs", args.model, label, args.epochs)
            progress = _Progress(args.epochs, enabled=sys.stderr.isatty() and not args.quiet)
            run_dir = train_run(cfg, argv=sys.argv, callbacks=[progress])
            reports[run_dir.name] = evaluate_run(run_dir, checkpoint=args.checkpoint)
        print(_table(reports))
        acc = [r["target"]["accuracy"] for r in reports.values()]
        gains = ", ".join(f"SIDDA {v} {a:.4f} ({100 * (a - acc[0]):+.1f} points)"
                          for v, a in zip(("paper", "robust"), acc[1:], strict=True))
        print(f"\ntarget accuracy: source-only {acc[0]:.4f} -> {gains}; checkpoint "
              f"'{args.checkpoint}'; {time.perf_counter() - t0:.0f} s")
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
                       description="Train SIDDA or the source-only baseline into out_dir/name, "
                       "or continue an interrupted run with --resume RUN_DIR.")
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="experiment YAML (see configs/)")
    source.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from RUN_DIR/checkpoints/last.pt, with "
                        "the run's own config (docs/recovery.md)")
    t.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.epochs=2 model.name=d4")
    t.add_argument("--force", action="store_true", help="replace an existing run directory")
    t.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:<i> or auto: shorthand for --set train.device=...; with "
                   "--resume, continue on this device (docs/distributed.md)")
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

    d = sub.add_parser("data", help="make, import, check and show data sets").add_subparsers(
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

    im = d.add_parser(
        "import-folder", parents=[common], help="convert image folders into a data set",
        description="Convert folders of PNG/JPEG images into a data folder: SOURCE holds one "
        "sub-folder per class (sorted names give labels 0..K-1); TARGET holds the same class "
        "sub-folders, or images directly when unlabelled. Images are cropped to their central "
        "square, resized (bicubic), scaled to [0, 1] and split train/test per class.")
    im.add_argument("source", help="source folder: one sub-folder of images per class")
    im.add_argument("target", help="target folder: the same class sub-folders, or flat")
    im.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    im.add_argument("--image-size", type=int, default=None,
                    help="side of the square output images (default: the images' own size)")
    im.add_argument("--test-fraction", type=float, default=0.2)
    im.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    im.add_argument("--fit", choices=("crop", "stretch"), default="crop",
                    help="non-square images: central square crop (default) or stretch")
    im.add_argument("--channels", type=int, choices=(1, 3), default=None,
                    help="output channels (default: 3 if any image is in colour, else 1)")
    im.set_defaults(func=_cmd_data_import)

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("dir", help="data folder")
    where.add_argument("--layout", choices=("zenodo", "mrssc2"), default=None,
                       help="default: from manifest.json or the files present")
    where.add_argument("--source-suffix", default=None,
                       help="zenodo layout: suffix of the source files (default: inferred)")
    where.add_argument("--target-suffix", default=None,
                       help="zenodo layout: suffix of the target files (default: inferred)")
    where.add_argument("--image-size", type=int, default=None, help="resize as data.image_size")
    where.add_argument("--memory-budget-mb", type=int, default=2048,
                       help="files above this float32 size stay memory-mapped (default 2048)")

    c = d.add_parser("check", parents=[common, where], help="validate a data folder",
                     description="Load every file of a data folder as training would, and print "
                     "counts per class, value ranges, dtypes, shapes and domain sizes. Invalid "
                     "data exits with status 2 and one line naming the file and the problem.")
    c.add_argument("--verify", action="store_true",
                   help="also recompute the SHA-256 checksums listed in manifest.json")
    c.add_argument("--write-manifest", action="store_true",
                   help="write manifest.json (counts, shapes, checksums) if the folder has none")
    c.set_defaults(func=_cmd_data_check)

    sh = d.add_parser("show", parents=[common, where], help="draw samples per class to a PNG",
                      description="Draw training images, one row per class, source on the left "
                      "and target on the right (random samples for an unlabelled target).")
    sh.add_argument("--out", required=True, help="output image, e.g. grid.png")
    sh.add_argument("--per-class", type=int, default=6, help="images per class and domain")
    sh.add_argument("--seed", type=int, default=0)
    sh.add_argument("--scale", choices=("domain", "image"), default="domain",
                    help="grey levels per domain (default, keeps intensity differences) or per "
                    "image")
    sh.set_defaults(func=_cmd_data_show)

    r = sub.add_parser("report", parents=[common], help="HTML report of evaluated runs",
                       description="Write one self-contained HTML page (figures embedded) with "
                       "the config, data manifest, metrics, calibration, checkpoint selection, "
                       "reliability diagrams, confusion matrices, Isomap and training curves of "
                       "one or more runs. Runs without a complete metrics.json are evaluated.")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", required=True, metavar="FILE.html")
    r.add_argument("--title", default=None)
    r.add_argument("--reevaluate", action="store_true",
                   help="re-evaluate every run, even one with a complete metrics.json")
    r.add_argument("--checkpoint", default="final",
                   choices=("final", "best_val_acc", "best_val_loss"),
                   help="checkpoint to evaluate when a run is (re-)evaluated")
    r.add_argument("--bins", type=int, default=15, help="ECE bins when evaluating")
    r.add_argument("--device", default="cpu")
    r.add_argument("--isomap-points", type=int, default=600,
                   help="points per domain in the Isomap (default 600, as the paper)")
    r.set_defaults(func=_cmd_report)

    sw = sub.add_parser("sweep", parents=[common], help="models x seeds x methods, then summary",
                        description="Train and evaluate every model, seed and method on one "
                        "config; write OUT/summary.csv, the table of mean +- std over seeds, "
                        "OUT/figure5.png (domain distance against epoch per model) and "
                        "OUT/report.html. Finished runs in OUT are reused.")
    sw.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    sw.add_argument("--models", required=True, help="comma-separated, e.g. cnn,d1,d2,d4,d8")
    sw.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    sw.add_argument("--methods", default="source_only,sidda",
                    help="comma-separated loss.method names (default: source_only,sidda)")
    sw.add_argument("--out", required=True, help="sweep folder")
    sw.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                    help="dotted overrides applied to every run, e.g. train.epochs=20")
    sw.add_argument("--checkpoint", default="final",
                    choices=("final", "best_val_acc", "best_val_loss"),
                    help="checkpoint whose metrics enter the table")
    sw.add_argument("--force", action="store_true", help="retrain runs that exist in OUT")
    sw.add_argument("--no-report", action="store_true", help="skip OUT/report.html")
    sw.set_defaults(func=_cmd_sweep)

    cm = sub.add_parser("compare", parents=[common], help="methods x seeds x data sets, tables",
                        description="Train and evaluate every method and seed on every data set "
                        "with one base config and one model; write OUT/compare.md (a table per "
                        "data set: mean +- std over seeds, per seed, gap closed), compare.csv, "
                        "compare_summary.csv, compare.json and OUT/report.html. Finished runs "
                        "in OUT are reused, so a stopped comparison continues when rerun.")
    cm.add_argument("--config", required=True, help="base experiment YAML, e.g. "
                    "configs/compare_shapes.yaml")
    cm.add_argument("--data", required=True, nargs="+", metavar="NAME=PATH",
                    help="data sets, e.g. shapes=data/shapes astro=data/astro (a bare PATH is "
                    "named after its folder)")
    cm.add_argument("--methods", default="source_only,sidda",
                    help="comma-separated METHOD or METHOD:VARIANT, e.g. source_only,sidda,"
                    "sidda:robust,dan,coral,dann,cdan,deepjdot,mcc (default source_only,sidda)")
    cm.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    cm.add_argument("--out", required=True, help="comparison folder")
    cm.add_argument("--model", default=None, help="model of every run (default: the config's)")
    cm.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                    help="dotted overrides applied to every run, e.g. train.epochs=20")
    cm.add_argument("--checkpoint", default="final",
                    choices=("final", "best_val_acc", "best_val_loss"),
                    help="checkpoint whose metrics enter the tables")
    cm.add_argument("--force", action="store_true", help="retrain runs that exist in OUT")
    cm.add_argument("--no-report", action="store_true", help="skip OUT/report.html")
    cm.set_defaults(func=_cmd_compare)

    de = sub.add_parser("demo", parents=[common],
                        help="source-only vs SIDDA (paper and robust) on a small simulated set",
                        description="Generate a small simulated set (clean source, Poisson-noise "
                        "target), train the source-only model and SIDDA's paper and robust "
                        "variants, evaluate them and print the table. The default data are the "
                        "paper's astronomical objects; docs/demo.md says why, and what happens "
                        "on shapes.")
    de.add_argument("--out", default=None, help="keep data and runs here (default: temporary)")
    de.add_argument("--dataset", choices=("astro", "shapes"), default="astro",
                    help="astronomical objects (default) or geometric shapes")
    de.add_argument("--model", default="cnn")
    de.add_argument("--n-per-class", type=int, default=600)
    de.add_argument("--image-size", type=int, default=64)
    de.add_argument("--epochs", type=int, default=24)
    de.add_argument("--warmup", type=int, default=12)
    de.add_argument("--batch-size", type=int, default=64)
    de.add_argument("--protocol", choices=("clean", "paper"), default="clean")
    de.add_argument("--checkpoint", default="final",
                    choices=("final", "best_val_acc", "best_val_loss"))
    de.add_argument("--seed", type=int, default=0)
    de.set_defaults(func=_cmd_demo)
    return p


def _error(e: BaseException) -> None:
    print(f"sidda: error: {one_line(e)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sidda`` console script.

    Exit statuses: 0 done; 2 bad input (:class:`~sidda.errors.InputError`, which config and
    data errors are, and a missing or existing path); 1 a diverged run, a failed write, or an
    internal error (a bug: any other exception, reported as such); 128 + N stopped by signal N.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = ["sidda", *(sys.argv[1:] if argv is None else argv)]  # recorded in argv.txt
    _setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    try:
        return args.func(args)
    except (InputError, FileExistsError, FileNotFoundError) as e:
        _error(e)
        return EXIT_USAGE
    except TrainingInterrupted as e:  # last.pt is written; schedulers read 128 + signal
        print(f"sidda: {e}", file=sys.stderr)
        return e.exit_status
    except OSError as e:  # a write failed (full disk ...), or a path the system refuses
        _error(e)
        return EXIT_USAGE if e.errno == errno.ENAMETOOLONG else EXIT_FAILURE
    except NonFiniteError as e:  # diverged
        _error(e)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("sidda: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - not the input's fault: say so, in one line
        logger.debug("internal error", exc_info=True)
        print(f"sidda: internal error (a bug in sidda, or a computation that diverged): "
              f"{type(e).__name__}: {one_line(e)}; rerun with -v for the traceback",
              file=sys.stderr)
        return EXIT_FAILURE
