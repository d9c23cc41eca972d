"""The data commands: ``data make``, ``data import-folder``, ``data check``, ``data show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidda._text import missing_glyphs_logged
from sidda.cli.parser import comma_list, hdus_option
from sidda.datasets import (
    NORMALIZATIONS,
    DataConfig,
    check_data,
    check_normalisation,
    format_normalisation,
    format_summary,
    import_image_folders,
    load_domains,
    resolve_data_config,
    write_manifest,
)
from sidda.datasets.preview import check_colour, colour_for
from sidda.errors import InputError
from sidda.experiments import write_generated
from sidda.generators import make_dataset
from sidda.plots import figure_path, sample_grid
from sidda.runs import atomic_write, check_new_folder

__all__ = ["MAX_N_PER_CLASS", "cmd_data_check", "cmd_data_import", "cmd_data_make",
           "cmd_data_show"]

#: Largest ``data make --n-per-class`` (3 classes x 2 domains of 100x100 float images is
#: already about 24 GB at this count).
MAX_N_PER_CLASS = 100_000


def _check_seed(seed: int) -> int:
    if seed < 0:
        raise InputError(f"--seed must be an integer >= 0, got {seed}")
    return seed


def cmd_data_make(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    if not 2 <= args.n_per_class <= MAX_N_PER_CLASS:
        raise InputError(f"--n-per-class must lie in 2..{MAX_N_PER_CLASS} (the images are drawn "
                         f"in memory), got {args.n_per_class}")
    out = check_new_folder(args.out)
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
    write_generated(out, splits, target_suffix=suffix)
    print(f"wrote {args.name} ({args.protocol} protocol) to {out}")
    return 0


def _data_config(args: argparse.Namespace, **extra: object) -> DataConfig:
    options = {"memory_budget_mb": args.memory_budget_mb, **extra}
    if args.image_size is not None:
        options["image_size"] = args.image_size
    return resolve_data_config(args.dir, layout=args.layout, source_suffix=args.source_suffix,
                               target_suffix=args.target_suffix, **options)


def cmd_data_import(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    hdus = hdus_option(args)
    out = import_image_folders(
        args.source, args.target, args.out, image_size=args.image_size,
        test_fraction=args.test_fraction, random_state=args.seed, fit=args.fit,
        channels=args.channels, hdus=hdus, target_test=args.target_test,
    )
    print(f"wrote {out}; train on it with  data: {{path: {out}}}  (its manifest records the "
          "target suffix, _target)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    if args.normalize is not None and args.normalize not in NORMALIZATIONS:
        raise InputError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got "
                         f"{args.normalize!r}")
    cfg = _data_config(args)
    print(format_summary(check_data(cfg, verify=args.verify)))
    if args.normalize is not None:
        print()
        print(format_normalisation(check_normalisation(cfg, mode=args.normalize)))
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


def cmd_data_show(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    q = 8.0 if args.stretch_q is None else args.stretch_q
    rgb = check_colour(None if args.rgb is None else comma_list(args.rgb, "--rgb", kind=int,
                                                                 example="2,1,0"),
                       args.stretch, q=q, minimum=args.stretch_minimum,
                       stretch_range=args.stretch_range)
    out = figure_path(args.out)
    cfg = _data_config(args, normalize="none")  # values as stored
    data = load_domains(cfg, splits=("train",))
    names = data.manifest.get("class_names")
    rgb = colour_for(data.manifest, data.in_channels, rgb)
    fig = sample_grid(data, per_class=args.per_class, random_state=args.seed, scale=args.scale,
                      class_names=names, rgb=rgb, stretch=args.stretch, q=q,
                      minimum=args.stretch_minimum, stretch_range=args.stretch_range,
                      title=f"{Path(cfg.path).name}: training images, rows = classes")
    existed = out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with missing_glyphs_logged():
        atomic_write(out, lambda f: fig.savefig(f, format=out.suffix[1:].lower()))
    print(f"wrote {out}" + (" (replaced the file that was there)" if existed else ""))
    return 0
