"""The experiment configs that ship with sidda, by name.

``sidda train --config NAME`` (and ``sweep``, ``compare``) takes a path to a YAML file or the
name of a config in this folder: ``paper/<experiment>`` for the paper's experiments (the
schedules of its Table 7, e.g. ``paper/shapes_d4``) and ``compare`` for the base config of
``sidda compare``. A path that exists wins over a shipped name; ``.yaml`` may be left out of a
name. ``sidda config list`` prints the names with the first line of each file's comment.

This module imports no torch: listing and resolving names is instant.

>>> resolve_config("paper/shapes_d4").name
'shapes_d4.yaml'
>>> "compare" in shipped_configs()
True
"""

from __future__ import annotations

import difflib
from pathlib import Path

from sidda.errors import InputError

__all__ = ["CONFIG_DIR", "describe", "resolve_config", "shipped_configs"]

#: The folder of the shipped configs (inside the installed package).
CONFIG_DIR = Path(__file__).resolve().parent


def shipped_configs() -> dict[str, Path]:
    """Shipped config name (``paper/shapes_d4``) -> its file, sorted by name."""
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    return {p.relative_to(CONFIG_DIR).with_suffix("").as_posix(): p for p in files}


def describe(path: Path) -> str:
    """The first line of the comment a config file starts with ("" if it has none).

    >>> describe(resolve_config("compare")).startswith("Base config of `sidda compare`")
    True
    """
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    return first.lstrip("#").strip() if first.startswith("#") else ""


def resolve_config(text: str | Path) -> Path:
    """The config file that ``--config text`` names: a path, else a shipped name.

    Raises:
        InputError: neither a file nor a shipped name; the message says where the shipped
            configs are and names the closest ones.
    """
    path = Path(text)
    if path.is_file():
        return path
    name = str(text).removesuffix(".yaml").removesuffix(".yml").strip("/")
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    if path.exists():
        raise InputError(f"--config {text}: a folder, not a config file; give a YAML file or a "
                         "shipped name (sidda config list)")
    close = difflib.get_close_matches(name, shipped, n=3, cutoff=0.5)
    close += [n for n in shipped if n.rsplit("/", 1)[-1] == name and n not in close]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise InputError(
        f"--config {text}: no such file, and no shipped config of that name; {hint}the "
        f"shipped configs are in {CONFIG_DIR} (`sidda config list` names them), or write a "
        "starter config for your data with `sidda config new --data DIR`"
    )
