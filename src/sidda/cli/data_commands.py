"""The data commands: ``data make``, ``data import-folder``, ``data check``, ``data show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidda.datasets import (
    DataConfig,
    check_data,
    format_summary,
    import_image_folders,
    load_domains,
    resolve_data_config,
    sample_grid,
    write_manifest,
)
from sidda.experiments import write_generated
from sidda.generators import make_dataset

__all__ = ["cmd_data_check", "cmd_data_import", "cmd_data_make", "cmd_data_show"]


def cmd_data_make(args: argparse.Namespace) -> int:
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
    write_generated(out, splits, target_suffix=suffix)
    print(f"wrote {args.name} ({args.protocol} protocol) to {out}")
    return 0


def _data_config(args: argparse.Namespace) -> DataConfig:
    options = {"memory_budget_mb": args.memory_budget_mb}
    if args.image_size is not None:
        options["image_size"] = args.image_size
    return resolve_data_config(args.dir, layout=args.layout, source_suffix=args.source_suffix,
                               target_suffix=args.target_suffix, **options)


def cmd_data_import(args: argparse.Namespace) -> int:
    out = import_image_folders(
        args.source, args.target, args.out, image_size=args.image_size,
        test_fraction=args.test_fraction, random_state=args.seed, fit=args.fit,
        channels=args.channels,
    )
    print(f"wrote {out}; train on it with  data: {{path: {out}}}  (its manifest records the "
          "target suffix, _target)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
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


def cmd_data_show(args: argparse.Namespace) -> int:
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
