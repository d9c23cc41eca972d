"""The experiment commands: ``train``, ``evaluate``, ``report``, ``sweep``, ``compare``, ``demo``.

Each command turns its options into one library call (:mod:`sidda.experiments`,
:mod:`sidda.report`, :mod:`sidda.sweep`, :mod:`sidda.compare`) and prints the result; the work
is done there. The library functions are looked up on their modules when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from sidda import compare, experiments, plots, report, sweep
from sidda.cli.console import Progress, setup_logging
from sidda.cli.parser import comma_list, hdus_option
from sidda.cli.tables import (
    calibration_lines,
    demo_lines,
    label_free_lines,
    notes_lines,
    run_table,
    standings_lines,
    train_summary,
)
from sidda.config import RunConfig
from sidda.configs import resolve_config
from sidda.datasets.preview import check_colour
from sidda.errors import InputError
from sidda.runs import RunDir
from sidda.train import distributed

__all__ = ["cmd_compare", "cmd_demo", "cmd_evaluate", "cmd_report", "cmd_sweep", "cmd_train"]

logger = logging.getLogger(__name__)


def _progress(epochs: int, args: argparse.Namespace) -> Progress:
    return Progress(epochs, enabled=sys.stderr.isatty() and not args.quiet)


def load_config(args: argparse.Namespace) -> RunConfig:
    """``--config`` (a file or a shipped name) with the ``--set`` overrides applied."""
    return RunConfig.from_yaml(resolve_config(args.config)).override(args.set or [])


def cmd_train(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.resume is not None:
        if args.set or args.force:
            raise InputError(
                "--resume continues with the run's own config.yaml; drop --set and --force (to "
                "change settings, start a new run with --config)"
            )
        run = RunDir(args.resume)  # resume_run explains a missing config.yaml
        cfg = experiments.run_config(run) if run.config_path.is_file() else RunConfig()
    else:
        if args.data is not None:
            from sidda.experiments.starter import starter_config

            cfg = starter_config(args.data).cfg.override(args.set or [])
            print(f"config: the starter config of {args.data} (`sidda config new --data "
                  f"{args.data}` prints it), kept as {cfg.run_dir}/config.yaml")
        else:
            cfg = load_config(args)
        if args.device is not None:
            cfg = cfg.override([f"train.device={args.device!r}"])
    ctx = distributed.init_distributed(args.device or cfg.train.device,
                                       timeout_s=cfg.dist.timeout_s)
    try:
        if ctx.is_distributed:
            setup_logging(args.quiet or not ctx.is_main, args.verbose and ctx.is_main,
                          prefix=f"rank {ctx.rank}: " if ctx.rank else "")
        progress = [_progress(cfg.train.epochs, args)] if ctx.is_main else []
        if args.resume is not None:
            run_dir = experiments.resume_run(args.resume, argv=args.argv, callbacks=progress,
                                             ctx=ctx, device=args.device)
        else:
            run_dir = experiments.train_run(cfg, argv=args.argv, force=args.force,
                                            callbacks=progress, ctx=ctx,
                                            before_training=lambda: _start_warnings(cfg))
    finally:
        distributed.shutdown()
    if not ctx.is_main:
        return 0
    if args.evaluate:
        rep = experiments.evaluate_run(run_dir, device=str(ctx.device))
        print(run_table({run_dir.name: rep}))
        print(label_free_lines(rep))
    print(train_summary(RunDir(run_dir), seconds=time.perf_counter() - t0,
                        evaluated=args.evaluate))
    return 0


def _start_warnings(cfg: RunConfig) -> None:
    """Log :func:`~sidda.experiments.preflight.start_warnings` of a new run, before epoch 1."""
    from sidda.experiments.preflight import start_warnings

    for line in start_warnings(cfg):
        logger.warning("%s", line)


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = experiments.TrainedRun.open(args.run_dir)
    rep = experiments.evaluate_run(run, data_path=args.data, checkpoint=args.checkpoint,
                                   device=args.device, n_bins=args.bins)
    print(run_table({Path(args.run_dir).name: rep}))
    print(calibration_lines(rep))
    for block in (label_free_lines(rep), notes_lines(rep)):
        if block:
            print(block)
    print(f"wrote {experiments.evaluation_dir(run, args.data).metrics_path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from sidda.experiments.folder_report import format_score
    from sidda.experiments.prediction import predict_run

    hdus = hdus_option(args)
    res = predict_run(args.run_dir, args.images, args.out, checkpoint=args.checkpoint,
                      domain=args.domain, temperature=args.temperature, latents=args.latents,
                      batch_size=args.batch_size, device=args.device, force=args.force,
                      hdus=hdus)
    names = res["class_names"] or [str(k) for k in range(len(res["counts"]))]
    counts = ", ".join(f"{n} {c}" for n, c in zip(names, res["counts"], strict=True))
    stats = f", {res['domain']} BatchNorm statistics" if res["domain"] else ""
    temp = f", temperature {res['temperature']:.3g}" if res["temperature"] else ""
    print(f"wrote {res['out']}: {res['n']} images ({counts}); checkpoint "
          f"{res['checkpoint']}{stats}{temp}")
    if res["score"] is not None:
        print(f"\nthe sub-folders are the run's classes: accuracy {res['score'].accuracy:.4f}\n"
              + format_score(res["score"], names)
              + f"\nwrote {' and '.join(map(str, res['score_files']))}")
    elif res["note"]:
        print(res["note"])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sidda.experiments.outputs import check_out_file

    plots.require_matplotlib()
    report.check_isomap_points(args.isomap_points)
    check_out_file(args.out, kind="html", inputs=args.run_dirs, force=args.force)
    rgb = check_colour(None if args.rgb is None else comma_list(args.rgb, "--rgb", kind=int,
                                                                 example="2,1,0"),
                       args.stretch)  # here, before the runs are evaluated
    experiments.evaluate_runs(
        args.run_dirs, when="always" if args.reevaluate else "missing",
        checkpoint=args.checkpoint, n_bins=args.bins, device=args.device,
    )
    out = report.write_report(args.run_dirs, args.out, title=args.title,
                              isomap_points=args.isomap_points, rgb=rgb, stretch=args.stretch)
    print(f"wrote {out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    plots.require_matplotlib()
    cfg = load_config(args)
    res = sweep.run_sweep(
        cfg, models=comma_list(args.models, "--models", example="cnn,d4"),
        seeds=comma_list(args.seeds, "--seeds", kind=int, example="0,1,2"),
        methods=comma_list(args.methods, "--methods", example="source_only,sidda"),
        out=args.out, checkpoint=args.checkpoint, force=args.force, report=not args.no_report,
        argv=args.argv, callbacks=[_progress(cfg.train.epochs, args)], validator=args.validator,
    )
    print(sweep.format_table(res.rows))
    if text := standings_lines(res.standings, what="config"):
        print("\n" + text)
    for what, path in (("summary", res.out / "summary.csv"), ("figure", res.figure),
                       ("report", res.report)):
        if path is not None:
            print(f"{what}: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    plots.require_matplotlib()
    cfg = load_config(args)
    res = compare.run_compare(
        cfg, data=compare.parse_data(args.data),
        methods=comma_list(args.methods, "--methods", example="source_only,sidda"),
        seeds=comma_list(args.seeds, "--seeds", kind=int, example="0,1,2"), out=args.out,
        model=args.model, checkpoint=args.checkpoint, force=args.force,
        report=not args.no_report, argv=args.argv,
        callbacks=[_progress(cfg.train.epochs, args)], validator=args.validator,
    )
    print(res.text, end="")
    for what, path in (("table", res.out / "compare.md"), ("runs", res.out / "compare.csv"),
                       ("report", res.report)):
        if path is not None:
            print(f"{what}: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    res = experiments.run_demo(
        args.out, dataset=args.dataset, model=args.model, n_per_class=args.n_per_class,
        image_size=args.image_size, epochs=args.epochs, warmup=args.warmup,
        batch_size=args.batch_size, protocol=args.protocol, checkpoint=args.checkpoint,
        seed=args.seed, argv=args.argv, callbacks=[_progress(args.epochs, args)],
    )
    print(run_table(res.reports))
    print("\n" + demo_lines(res, checkpoint=args.checkpoint))
    if res.out is not None:
        print(f"data and runs kept in {res.out}")
    return 0
