"""What a comparison runs: method tokens (``METHOD[:VARIANT][+dbn|-dbn]``) and data sets.

:func:`parse_method` and :func:`parse_data` read the command line's lists; :func:`check_data`
checks that a data folder holds the files a run config reads, without loading them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from sidda.config import ConfigError, RunConfig
from sidda.datasets import DataError, layout_paths
from sidda.methods.config import METHOD_NAMES, OPTIONS, VARIANTS, defaults

__all__ = ["DOMAIN_BN_SUFFIXES", "PLAIN_NAME", "MethodSpec", "check_data", "parse_data",
           "parse_method"]

#: A data set name: letters, digits, ``_``, ``-``, ``.``, not starting with punctuation.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


#: Token suffixes -> ``loss.domain_bn`` (BatchNorm statistics per domain on / off) and folder.
DOMAIN_BN_SUFFIXES = {"+dbn": (True, "_dbn"), "-dbn": (False, "_nodbn")}


class MethodSpec(NamedTuple):
    """One entry of the method list."""

    token: str  #: as written in the table, e.g. ``sidda:robust`` or ``dan+dbn``
    method: str  #: ``loss.method``
    variant: str | None  #: ``loss.variant`` (sidda only)

    @property
    def domain_bn(self) -> bool | None:
        """``loss.domain_bn`` as the token's suffix sets it; None: the method's default."""
        suffix = _split_suffix(self.token)[1]
        return DOMAIN_BN_SUFFIXES[suffix][0] if suffix else None

    @property
    def folder(self) -> str:
        """The token as a folder name (``:`` becomes ``-``, ``+dbn`` ``_dbn``, ``-dbn``
        ``_nodbn``)."""
        base, suffix = _split_suffix(self.token)
        return base.replace(":", "-") + (DOMAIN_BN_SUFFIXES[suffix][1] if suffix else "")

    @property
    def key(self) -> tuple:
        """What the run trains: (method, variant, domain_bn resolved to the default)."""
        dbn = self.domain_bn
        if dbn is None:
            dbn = defaults(self.method, self.variant).get("domain_bn")
        return self.method, self.variant, dbn


def _split_suffix(token: str) -> tuple[str, str]:
    for suffix in DOMAIN_BN_SUFFIXES:
        if token.endswith(suffix):
            return token[: -len(suffix)], suffix
    return token, ""


def parse_method(token: str) -> MethodSpec:
    """``METHOD``, ``METHOD:VARIANT``, either with ``+dbn`` (BatchNorm statistics per domain,
    ``loss.domain_bn: true``) or ``-dbn`` (``false``) as a :class:`MethodSpec`.

    >>> parse_method("sidda:robust")
    MethodSpec(token='sidda:robust', method='sidda', variant='robust')
    >>> parse_method("sidda").variant
    'robust'
    >>> spec = parse_method("dan+dbn")
    >>> spec.domain_bn, spec.folder
    (True, 'dan_dbn')
    """
    token = token.strip()
    base, suffix = _split_suffix(token)
    method, sep, variant = base.partition(":")
    if suffix and method in OPTIONS and "domain_bn" not in OPTIONS[method]:
        raise ConfigError(
            f"{token!r}: {method} keeps no BatchNorm statistics per domain (it trains on the "
            f"source alone); write {method}"
        )
    if method not in METHOD_NAMES:
        raise ConfigError(
            f"unknown method {method!r} in --methods; choose from {', '.join(METHOD_NAMES)} "
            "(sidda also as sidda:paper or sidda:robust; +dbn or -dbn after a method turns "
            "its BatchNorm statistics per domain on or off, e.g. dan+dbn)"
        )
    if not sep:
        return MethodSpec(token, method, OPTIONS[method].get("variant"))  # type: ignore[arg-type]
    if "variant" not in OPTIONS[method]:
        raise ConfigError(f"method {method!r} has no variants; write {method} instead of {base}")
    if variant not in VARIANTS:
        raise ConfigError(
            f"unknown variant {variant!r} in {token!r}; choose from "
            f"{', '.join(f'{method}:{v}' for v in VARIANTS)}"
        )
    return MethodSpec(token, method, variant)


def parse_data(items: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` or ``PATH`` items (NAME: the folder's name) as ``{name: path}``.

    >>> parse_data(["shapes=data/shapes", "data/astro"])
    {'shapes': PosixPath('data/shapes'), 'astro': PosixPath('data/astro')}
    """
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name or Path(item).resolve().name, item
        name = name.strip()
        if not path.strip():
            raise ConfigError(f"--data {item!r} has no folder; write NAME=PATH")
        if not PLAIN_NAME.fullmatch(name):
            raise ConfigError(
                f"--data {item!r}: the name {name!r} must be a plain name (letters, digits, "
                "'_', '-', '.'), e.g. shapes=data/shapes"
            )
        if name in out:
            raise ConfigError(
                f"--data: the name {name!r} is given twice; name them, e.g. {name}_a=PATH "
                f"{name}_b=PATH"
            )
        out[name] = Path(path)
    return out


def check_data(name: str, cfg: RunConfig) -> None:
    """The data folder exists and holds the files the config reads (nothing is loaded)."""
    root, d = Path(cfg.data.path), cfg.data
    if not root.is_dir():
        raise DataError(f"--data {name}={root}: no such folder")
    paths = layout_paths(root, layout=d.layout, source_suffix=d.source_suffix,
                         target_suffix=d.target_suffix)
    for key, (x, y) in paths.items():
        for f in (x, y) if key.endswith("_s") else (x,):  # the target may be unlabelled
            if not f.is_file():
                raise DataError(
                    f"--data {name}={root}: {f.relative_to(root)} not found (data.layout "
                    f"{d.layout!r}, source_suffix {d.source_suffix!r}, target_suffix "
                    f"{d.target_suffix!r}); check the folder with `sidda data check {root}`"
                )
