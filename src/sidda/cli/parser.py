"""The argument parser of every ``sidda`` subcommand; each sets ``func``, the command to run.

Building the parser and parsing import nothing heavy (no torch, escnn or matplotlib), so that
``sidda --help``, ``sidda SUB --help`` and a mistyped option answer at once: a command's module
is imported when the command runs (:func:`_command`), and the texts that name checkpoints and
label-free rules are spelled here (:data:`CHECKPOINT_NAMES`, :data:`RULE_NAMES`,
:data:`DEFAULT_VALIDATOR`).
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable

from sidda._version import __version__
from sidda.cli.runs_commands import add_runs_parser
from sidda.errors import InputError, short_repr

__all__ = ["build_parser", "checkpoint_arg", "comma_list", "hdus_option"]


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``name`` of ``sidda.cli.<module>``, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(f"sidda.cli.{module}"), name)(args)

    run.__name__ = run.__qualname__ = name
    return run


cmd_train, cmd_evaluate, cmd_predict, cmd_report, cmd_sweep, cmd_compare, cmd_demo = (
    _command("commands", n) for n in ("cmd_train", "cmd_evaluate", "cmd_predict", "cmd_report",
                                      "cmd_sweep", "cmd_compare", "cmd_demo"))
cmd_data_make, cmd_data_import, cmd_data_check, cmd_data_show = (
    _command("data_commands", n) for n in ("cmd_data_make", "cmd_data_import",
                                           "cmd_data_check", "cmd_data_show"))
cmd_config_list, cmd_config_new = (
    _command("config_commands", n) for n in ("cmd_config_list", "cmd_config_new"))


#: The names ``--checkpoint`` takes, spelled here so that parsing imports nothing heavy; they
#: are those of :data:`sidda.runs.CHECKPOINTS`, :data:`sidda.runs.EPOCH_CHECKPOINT` and
#: :data:`sidda.evaluate.PICK_RULES` (a test keeps the copies equal).
CHECKPOINT_NAMES = ("final", "best_val_acc", "best_val_loss")
EPOCH_NAME = re.compile(r"epoch_\d{4,}")
RULE_NAMES = ("entropy", "im", "snd", "bnm", "class_ami", "knn", "iwv", "dev", "source_acc")
#: :data:`sidda.metrics.DEFAULT_VALIDATOR`, spelled here for the help texts (a test keeps it).
DEFAULT_VALIDATOR = "class_ami"

CHECKPOINT_HELP = (f"a checkpoint ({', '.join(CHECKPOINT_NAMES)}, epoch_0007 when the run kept "
                   f"them) or the pick of a label-free rule ({', '.join(RULE_NAMES)}); default "
                   "final")


def comma_list(text: str, option: str, *, kind: type = str, what: str | None = None,
               example: str = "a,b") -> list:
    """The items of a comma-separated option (``--seeds 0,1,2``), stripped, converted by
    ``kind``; the one parser of every such option.

    >>> comma_list("0, 1,2", "--seeds", kind=int)
    [0, 1, 2]

    Raises:
        InputError: an empty item (``1,,2``, a trailing comma) or one ``kind`` does not take;
            the message names ``option`` and gives ``example``.
    """
    what = what or ("integers" if kind is int else "names")
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise InputError(f"{option} takes comma-separated {what} without empty items, e.g. "
                         f"{example}; got {short_repr(text)}")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise InputError(f"{option} takes comma-separated {what}, e.g. {example}; got "
                         f"{short_repr(text)}") from None


def hdus_option(args: argparse.Namespace) -> tuple[str | int, ...] | None:
    """The FITS HDUs of ``--bands`` (names) or ``--hdu`` (indices), as ``data import-folder``
    and ``predict`` take them; None for neither."""
    if args.bands is not None:
        return tuple(comma_list(args.bands, "--bands", what="HDU names (EXTNAME)",
                                example="G,R,Z"))
    if args.hdu is not None:
        return tuple(comma_list(args.hdu, "--hdu", kind=int, example="1,2,3"))
    return None


def checkpoint_arg(text: str) -> str:
    """``--checkpoint``: a checkpoint name or a label-free rule.

    >>> checkpoint_arg("epoch_0003")
    'epoch_0003'
    """
    if text in CHECKPOINT_NAMES or text in RULE_NAMES or EPOCH_NAME.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown checkpoint {short_repr(text)}; use one of {', '.join(CHECKPOINT_NAMES)}, an "
        "epoch checkpoint such as epoch_0007 (train.keep_epoch_checkpoints), or a label-free "
        f"rule ({', '.join(RULE_NAMES)})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(
        prog="sidda", description="SInkhorn Dynamic Domain Adaptation for image classifiers."
    )
    p.add_argument("--version", action="version", version=f"sidda {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    many = argparse.ArgumentParser(add_help=False)  # sweep and compare: many runs in OUT
    many.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                      help="dotted overrides applied to every run, e.g. train.epochs=20")
    many.add_argument("--checkpoint", default="final", metavar="NAME", type=checkpoint_arg,
                      help=CHECKPOINT_HELP)
    many.add_argument("--force", action="store_true", help="retrain runs that exist in OUT")
    many.add_argument("--no-report", action="store_true", help="skip OUT/report.html")
    many.add_argument("--validator", default=None, metavar="NAME",
                      help=f"label-free validator of the tables and of the ranking when the "
                      f"target has no labels ({', '.join(RULE_NAMES)}; default "
                      f"{DEFAULT_VALIDATOR}); see docs/evaluation.md")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", parents=[common], help="train a run from a YAML config",
                       description="Train a run into out_dir/name from a config (a YAML file or "
                       "a shipped name), from a data folder alone (--data: the starter config "
                       "`sidda config new` writes), or continue an interrupted run with --resume "
                       "RUN_DIR. Warnings about wasteful choices come before epoch 1; a summary "
                       "and the next command at the end.")
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE|NAME",
                        help="experiment YAML: a file, or a shipped name such as paper/shapes_d4 "
                        "(sidda config list)")
    source.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from RUN_DIR/checkpoints/last.pt, with "
                        "the run's own config (docs/recovery.md)")
    source.add_argument("--data", metavar="DIR",
                        help="train on this data folder with the starter config `sidda config "
                        "new --data DIR` would write (the run is runs/<folder name>)")
    t.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.epochs=2 model.name=d4")
    t.add_argument("--force", action="store_true", help="replace an existing run directory")
    t.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:<i> or auto: shorthand for --set train.device=...; with "
                   "--resume, continue on this device (docs/distributed.md)")
    t.add_argument("--evaluate", action="store_true", help="evaluate the final model afterwards")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", parents=[common], help="test metrics of a trained run",
                       description="Accuracy, ECE, Brier, NLL on source and target test sets, "
                       "and label-free diagnostics of the target test images (collapse flag, "
                       "domain distances, validators); writes RUN_DIR/metrics.json and the "
                       "per-image .npy files.")
    e.add_argument("run_dir")
    e.add_argument("--data", help="data folder (default: the one the run was trained on); "
                   "another folder needs only the target test images (docs/evaluation.md)")
    e.add_argument("--checkpoint", default="final", metavar="NAME", type=checkpoint_arg,
                   help=CHECKPOINT_HELP)
    e.add_argument("--device", default="cpu")
    e.add_argument("--bins", type=int, default=15, help="bins of the ECE (default 15)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser(
        "predict", parents=[common], help="classify new images with a trained run",
        description="Class probabilities of new images, one CSV row each. IMAGES is a .npy file "
        "(NHW, NHWC or NCHW), an image or FITS file, or a folder of them; they are prepared as "
        "the run's data was (import-folder reading, data.normalize, the model's size).")
    pr.add_argument("run_dir")
    pr.add_argument("images", help=".npy file, image/FITS file, or folder of them")
    pr.add_argument("--out", required=True,
                    help="the CSV to write, e.g. preds.csv (its folder is created); with class "
                    "sub-folders named after the run's classes, also OUT.report.txt and .json")
    pr.add_argument("--force", action="store_true",
                    help="replace an existing --out that is an input, a run's file or not a "
                    "predictions CSV")
    pr.add_argument("--checkpoint", default="final", metavar="NAME", type=checkpoint_arg,
                    help=CHECKPOINT_HELP + " (a rule needs `sidda evaluate` first)")
    pr.add_argument("--domain", choices=("target", "source"), default="target",
                    help="BatchNorm statistics of which domain, for runs that keep one set per "
                    "domain (robust SIDDA, loss.domain_bn, adabn); default target; other "
                    "runs have one set")
    pr.add_argument("--temperature", action="store_true",
                    help="divide the logits by the temperature `sidda evaluate` fitted on the "
                    "source validation split")
    pr.add_argument("--latents", action="store_true", help="also write the latent vectors")
    _add_hdu_options(pr, "FITS with one image HDU per band: stack the HDUs with these "
                     "EXTNAMEs, as import-folder --bands (default: the run's import's choice)")
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--device", default="cpu")
    pr.set_defaults(func=cmd_predict)

    cf = sub.add_parser("config", help="list the shipped configs, write a starter config"
                        ).add_subparsers(dest="config_command", required=True, metavar="ACTION")
    cl = cf.add_parser("list", help="the configs that ship with sidda",
                       description="Print the name and description of every shipped config; "
                       "--config NAME takes the name.")
    cl.set_defaults(func=cmd_config_list)
    cn = cf.add_parser(
        "new", parents=[common], help="a commented starter config sized to a data folder",
        description="Check a data folder as `sidda data check` does and write a commented "
        "config sized to it: its own image size (no resizing), a batch size that fits the "
        "smaller domain, about 3000 optimisation steps (10 to 60 epochs), a quarter of them of "
        "warm-up, milestones inside the run, out_dir runs. Without --out it is printed.")
    cn.add_argument("--data", required=True, metavar="DIR", help="the data folder")
    cn.add_argument("--model", choices=("cnn", "d4"), default="cnn",
                    help="cnn (default) or d4 (rotation- and flip-equivariant)")
    cn.add_argument("--name", default=None, help="run name (default: the folder's name)")
    cn.add_argument("--out", default=None, metavar="FILE.yaml", help="write it here")
    cn.add_argument("--force", action="store_true", help="replace an existing --out file")
    cn.set_defaults(func=cmd_config_new)

    d = sub.add_parser("data", help="make, import, check and show data sets").add_subparsers(
        dest="data_command", required=True, metavar="ACTION")
    m = d.add_parser("make", parents=[common], help="generate a source/target data set",
                     description="Generate the paper's synthetic sets in the Zenodo layout.")
    m.add_argument("name", choices=("shapes", "astro", "mnist-m"))
    m.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    m.add_argument("--n-per-class", type=int, default=1000,
                   help="base images per class (2 to 100000)")
    m.add_argument("--seed", type=int, default=0, help="an integer >= 0")
    m.add_argument("--protocol", choices=("clean", "paper"), default="clean",
                   help="clean: disjoint base images per domain and split; paper: targets are "
                   "corrupted copies of the source images")
    m.add_argument("--shift", default=None, help="target shift (mnist-m: noise or psf)")
    m.add_argument("--image-size", type=int, default=None)
    m.set_defaults(func=cmd_data_make)

    im = d.add_parser(
        "import-folder", parents=[common], help="convert PNG/JPEG or FITS folders into a data set",
        description="Convert folders of PNG/JPEG images or FITS cutouts (.fits, .fit, .fts, "
        "optionally .gz; 2-D images or (C, H, W) band cubes) into a data folder: SOURCE holds "
        "one sub-folder per class (sorted names give labels 0..K-1); TARGET holds the same "
        "class sub-folders, or images directly when unlabelled. Images are cropped to their "
        "central square, resized (bicubic) and split train/test per class; PNG/JPEG are scaled "
        "to [0, 1], FITS values are kept as float32 (NaN -> 0). Class folders are read "
        "recursively.")
    im.add_argument("source", help="source folder: one sub-folder of images per class")
    im.add_argument("target", help="target folder: the same class sub-folders, or flat")
    im.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    im.add_argument("--image-size", type=int, default=None,
                    help="side of the square output images (default: the images' own size)")
    im.add_argument("--test-fraction", type=float, default=0.2)
    im.add_argument("--seed", type=int, default=0,
                    help="seed of the train/test split (an integer >= 0)")
    im.add_argument("--fit", choices=("crop", "stretch"), default="crop",
                    help="non-square images: central square crop (default) or stretch")
    im.add_argument("--channels", type=int, choices=(1, 3), default=None,
                    help="output channels of PNG/JPEG images (default: 3 if any image is in "
                    "colour, else 1); FITS files keep their band count")
    _add_hdu_options(im, "FITS with one image HDU per band: stack the HDUs with these "
                     "EXTNAMEs (case-insensitive) as bands, in this order, e.g. G,R,Z")
    im.add_argument("--target-test", default=None, metavar="DIR",
                    help="a labelled target test set: DIR holds one sub-folder per class (the "
                    "source's); every TARGET image then goes to the target's training split")
    im.set_defaults(func=cmd_data_import)

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
    c.add_argument("--normalize", default=None, metavar="MODE",
                   help="also print per-domain, per-band statistics of the training images "
                   "after this data.normalize mode (half, none, per_band_standard, "
                   "per_band_minmax, asinh), with warnings where the domains will differ")
    c.set_defaults(func=cmd_data_check)

    sh = d.add_parser("show", parents=[common, where], help="draw samples per class to a PNG",
                      description="Draw training images, one row per class, source on the left "
                      "and target on the right (random samples for an unlabelled target).")
    sh.add_argument("--out", required=True,
                    help="output image, e.g. grid.png (no suffix: .png is added)")
    sh.add_argument("--per-class", type=int, default=6,
                    help="images per class and domain (1 to 64)")
    sh.add_argument("--seed", type=int, default=0, help="an integer >= 0")
    sh.add_argument("--scale", choices=("domain", "image"), default="domain",
                    help="stretch limits per domain (default, keeps intensity differences) or "
                    "per image")
    sh.add_argument("--rgb", default=None, metavar="R,G,B",
                    help="bands drawn as red, green, blue, e.g. 2,1,0 for g,r,z stored in that "
                    "order (one band: grey); default: 0,1,2, or 2,1,0 for FITS imports")
    sh.add_argument("--stretch", default="linear", metavar="NAME",
                    help="linear (default), asinh or lupton (Lupton et al. 2004)")
    sh.add_argument("--stretch-q", type=float, default=None, metavar="Q",
                    help="softening of asinh and lupton (default 8)")
    sh.add_argument("--stretch-minimum", type=float, default=None, metavar="V",
                    help="value drawn black (default: from the images)")
    sh.add_argument("--stretch-range", type=float, default=None, metavar="R",
                    help="range above the minimum (default: from the images)")
    sh.set_defaults(func=cmd_data_show)

    r = sub.add_parser("report", parents=[common], help="HTML report of evaluated runs",
                       description="Write one self-contained HTML page (figures embedded) with "
                       "the config, data manifest, metrics, calibration, checkpoint selection, "
                       "reliability diagrams, confusion matrices, Isomap, training curves and "
                       "galleries of target images of one or more runs, with what happened on "
                       "the target first. Runs without a complete metrics.json are evaluated.")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", required=True, metavar="FILE.html")
    r.add_argument("--force", action="store_true",
                   help="replace an existing --out that is a run's file or not an HTML page")
    r.add_argument("--title", default=None)
    r.add_argument("--reevaluate", action="store_true",
                   help="re-evaluate every run, even one with a complete metrics.json")
    r.add_argument("--checkpoint", default="final", metavar="NAME", type=checkpoint_arg,
                   help=CHECKPOINT_HELP)
    r.add_argument("--bins", type=int, default=15, help="ECE bins when evaluating")
    r.add_argument("--device", default="cpu")
    r.add_argument("--isomap-points", type=int, default=600,
                   help="points per domain in the Isomap (default 600, as the paper)")
    r.add_argument("--rgb", default=None, metavar="R,G,B",
                   help="bands drawn as red, green, blue in the galleries of target images, "
                   "e.g. 2,1,0 (one band: grey); default as sidda data show: 2,1,0 for FITS "
                   "imports, else 0,1,2")
    r.add_argument("--stretch", default="linear", metavar="NAME",
                   help="stretch of the galleries: linear (default), asinh or lupton")
    r.set_defaults(func=cmd_report)

    sw = sub.add_parser("sweep", parents=[common, many],
                        help="models x seeds x methods, then summary",
                        description="Train and evaluate every model, seed and method on one "
                        "config; write OUT/summary.csv, the table of mean +- std over seeds, "
                        "OUT/figure5.png (domain distance against epoch per model) and "
                        "OUT/report.html. Finished runs in OUT are reused.")
    sw.add_argument("--config", required=True, metavar="FILE|NAME",
                    help="experiment YAML: a file or a shipped name (sidda config list)")
    sw.add_argument("--models", required=True, help="comma-separated, e.g. cnn,d1,d2,d4,d8")
    sw.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    sw.add_argument("--methods", default="source_only,sidda",
                    help="comma-separated loss.method names (default: source_only,sidda)")
    sw.add_argument("--out", required=True, help="sweep folder")
    sw.set_defaults(func=cmd_sweep)

    cm = sub.add_parser("compare", parents=[common, many],
                        help="methods x seeds x data sets, tables",
                        description="Train and evaluate every method and seed on every data set "
                        "with one base config and one model; write OUT/compare.md (a table per "
                        "data set: mean +- std over seeds, per seed, gap closed), compare.csv, "
                        "compare_summary.csv, compare.json and OUT/report.html. Finished runs "
                        "in OUT are reused, so a stopped comparison continues when rerun.")
    cm.add_argument("--config", required=True, metavar="FILE|NAME",
                    help="base experiment YAML: a file or a shipped name, e.g. compare "
                    "(sidda config list)")
    cm.add_argument("--data", required=True, nargs="+", metavar="NAME=PATH",
                    help="data sets, e.g. shapes=data/shapes astro=data/astro (a bare PATH is "
                    "named after its folder)")
    cm.add_argument("--methods", default="source_only,sidda",
                    help="comma-separated METHOD or METHOD:VARIANT, +dbn or -dbn after one "
                    "for BatchNorm statistics per domain on or off, e.g. source_only,sidda,"
                    "sidda:paper,dan,dan+dbn,coral,dann,cdan,deepjdot,mcc,adabn (default "
                    "source_only,sidda)")
    cm.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    cm.add_argument("--out", required=True, help="comparison folder")
    cm.add_argument("--model", default=None, help="model of every run (default: the config's)")
    cm.set_defaults(func=cmd_compare)

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
    de.add_argument("--checkpoint", default="final", metavar="NAME", type=checkpoint_arg,
                    help=CHECKPOINT_HELP)
    de.add_argument("--seed", type=int, default=0)
    de.set_defaults(func=cmd_demo)
    add_runs_parser(sub, common)
    return p


def _add_hdu_options(parser: argparse.ArgumentParser, bands_help: str) -> None:
    """``--bands NAMES`` or ``--hdu INDICES`` (one of them), as :func:`hdus_option` reads them."""
    hdu = parser.add_mutually_exclusive_group()
    hdu.add_argument("--bands", default=None, metavar="NAMES", help=bands_help)
    hdu.add_argument("--hdu", default=None, metavar="INDICES",
                     help="as --bands, by HDU index (0 is the primary HDU), e.g. 1,2,3")
