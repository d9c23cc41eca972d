"""The config commands: ``config list`` (the shipped configs) and ``config new`` (a starter
config sized to a data folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidda.configs import CONFIG_DIR, describe, shipped_configs
from sidda.errors import InputError

__all__ = ["cmd_config_list", "cmd_config_new"]


def cmd_config_list(args: argparse.Namespace) -> int:
    shipped = shipped_configs()
    width = max(map(len, shipped))
    for name, path in shipped.items():
        text = describe(path)
        text = text if len(text) <= 100 else text[:97].rstrip() + "..."
        print(f"{name:<{width}}  {text}".rstrip())
    print(f"\n{len(shipped)} configs in {CONFIG_DIR}; use one with  sidda train --config NAME  "
          "(a path to your own YAML works too)")
    return 0


def cmd_config_new(args: argparse.Namespace) -> int:
    from sidda.experiments.starter import starter_config  # loads torch: only when it runs

    out = Path(args.out) if args.out is not None else None
    if out is not None and out.exists() and not args.force:
        raise InputError(f"{out} exists; choose another --out, or pass --force to replace it")
    if out is not None and out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name, e.g. {out}/mine.yaml")
    starter = starter_config(args.data, model=args.model, name=args.name)
    if out is None:
        print(starter.text, end="")
        return 0
    from sidda.runs import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, starter.text)
    print(f"wrote {out}; train with  sidda train --config {out}")
    return 0
