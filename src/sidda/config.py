"""``RunConfig``: one experiment, composed of the component configs, mapped one-to-one on YAML.

.. code-block:: yaml

    name: shapes_cnn_sidda
    out_dir: runs
    data:  {path: data/shapes, target_suffix: _noise, val_fraction: 0.2}
    model: {name: cnn}
    loss:  {method: sidda, eta_mode: faithful}
    train: {epochs: 50, warmup: 5, milestones: [25, 40], seed: 10}
    dist:  {bf16: true}                      # GPU precision and several processes

Unknown keys and values of the wrong type are errors. Dotted overrides such as
``train.epochs=2`` or ``model.name=d4`` are parsed with :func:`ast.literal_eval` (a bare word
is a string).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sidda.datasets import DataConfig
from sidda.errors import ConfigError, short_repr
from sidda.methods.config import LEGACY_OPTIONS, OPTIONS, LossConfig, method_loss
from sidda.models import ModelConfig
from sidda.train.config import DistConfig, TrainConfig

__all__ = ["ConfigError", "RunConfig"]

_MAX_NAME_BYTES = 255  # NAME_MAX of Linux, macOS and Windows file systems


@dataclass(frozen=True)
class RunConfig:
    """A whole experiment.

    Attributes:
        name: Run name; the run directory is ``out_dir/name``.
        out_dir: Parent folder of run directories.
        data: Data options.
        model: Model options.
        loss: Objective options.
        train: Optimisation options.
        dist: GPU precision, memory format and multi-process options
            (:class:`~sidda.train.config.DistConfig`, ``docs/distributed.md``).
    """

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def __post_init__(self) -> None:
        name = self.name.strip()
        if not name or name in (".", "..") or "/" in name or "\\" in name or any(
                ord(c) < 32 or ord(c) == 127 for c in self.name):
            raise ValueError(
                f"name must be a plain folder name (no '/', no control character such as "
                f"a line break, not empty, '.' or '..'), got "
                f"{short_repr(self.name)}; the run directory is out_dir/name"
            )
        if not self.out_dir.strip() or "\0" in self.out_dir:
            raise ValueError(
                f"out_dir must be a folder path, got {short_repr(self.out_dir)}; e.g. 'runs'"
            )
        for key, text in (("name", self.name), ("out_dir", self.out_dir),
                          ("data.path", self.data.path)):
            try:  # config.yaml and run.json are UTF-8: a path that is not cannot be recorded
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{key} is not valid UTF-8 text, got {short_repr(text)}; rename the folder "
                    "(or use a link to it) with a UTF-8 name"
                ) from None
        if len(self.name.encode()) > _MAX_NAME_BYTES:
            raise ValueError(
                f"name is {len(self.name.encode())} bytes long; folder names may have at most "
                f"{_MAX_NAME_BYTES}; choose a shorter name"
            )

    @property
    def run_dir(self) -> Path:
        """``out_dir/name``."""
        return Path(self.out_dir) / self.name

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build from a nested dict; unknown keys and wrong types raise :class:`ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
        return _build(cls, d, "")

    @classmethod
    def from_yaml(cls, path: str | Path, *, record: bool = False) -> RunConfig:
        """Load a YAML file.

        ``record=True`` reads a run's own ``config.yaml``, which sidda writes with every key
        resolved: a key that such a file lacks was added to sidda after the run, and takes the
        value that reproduces what the run did (:data:`~sidda.methods.config.LEGACY_OPTIONS`,
        where today's default differs), not today's default.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            d = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
        except _UnsupportedYAML as e:
            raise ConfigError(f"{path}: {_yaml_error_line(e)}; write the keys out in each "
                              "section") from None
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_error_line(e)})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
        if not isinstance(d, dict):
            raise ConfigError(
                f"{path}: a config must be a mapping of sections, got {type(d).__name__}"
            )
        if record:
            d = _with_legacy_options(d)
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def override(self, assignments: list[str]) -> RunConfig:
        """Apply dotted ``key=value`` overrides, e.g. ``["train.epochs=2", "model.name=d4"]``.

        Setting ``loss.method`` or ``loss.variant`` re-derives the loss section for the new
        method (:func:`~sidda.methods.config.method_loss`): options left at the old defaults
        take the new ones, and options of another method are dropped; loss keys set in the
        same overrides are kept.
        """
        d = self.to_dict()
        old_loss, set_loss = dict(d["loss"]), {}
        for item in assignments:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(
                    f"override {short_repr(item)} must look like section.key=value"
                )
            key, raw = item.split("=", 1)
            parts = key.strip().split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(
                        f"unknown config section {short_repr(p)} in override {short_repr(item)}"
                    )
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(
                    f"unknown config key {short_repr(key)}; known keys here: "
                    f"{', '.join(sorted(node))}"
                )
            node[parts[-1]] = _parse_value(raw.strip(), _field_type(parts))
            if parts[0] == "loss" and len(parts) == 2:
                set_loss[parts[1]] = node[parts[1]]
        if set_loss.keys() & {"method", "variant"}:
            d["loss"] = {**method_loss(old_loss, d["loss"]["method"],
                                       variant=d["loss"].get("variant")), **set_loss}
        return RunConfig.from_dict(d)

    def to_dict(self) -> dict:
        """Nested plain dict (tuples as lists), the inverse of :meth:`from_dict`."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


class _UnsupportedYAML(yaml.constructor.ConstructorError):
    """Valid YAML that configs do not use (merge keys)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _UnsupportedYAML(None, None, "merge keys (<<) are not supported",
                                       key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the constructor below reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short_repr(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _with_legacy_options(d: dict) -> dict:
    """``d`` with the loss options that its method has but that it lacks set to their
    :data:`~sidda.methods.config.LEGACY_OPTIONS` values."""
    loss = d.get("loss")
    if not isinstance(loss, dict) or not isinstance(loss.get("method", "sidda"), str):
        return d
    own = OPTIONS.get(loss.get("method", "sidda"), {})
    missing = {k: v for k, v in LEGACY_OPTIONS.items() if k in own and k not in loss}
    return {**d, "loss": {**loss, **missing}} if missing else d


def _yaml_error_line(e: Exception) -> str:
    """A YAML error as one line: the problem and where it is."""
    mark = getattr(e, "problem_mark", None)
    if getattr(e, "problem", None) and mark is not None:
        return f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(e).split())


def _field_type(parts: list[str]) -> object:
    """The annotation of the config key ``parts`` (``["data", "normalize"]``), or None."""
    tp: object = RunConfig
    for p in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(p)
    return tp


def _parse_value(raw: str, tp: object = None) -> object:
    """The value of an override ``key=raw``, for a key annotated ``tp``.

    A key typed ``str`` takes the text as it is (``none``, ``true`` and ``7`` stay strings);
    quotes around it are removed. Other keys read Python literals, with ``null``/``none``/``~``
    for None and ``true``/``false`` in any case; else a YAML list of bare words
    (``[flip, translate]``); else the text.

    >>> _parse_value("none", str), _parse_value("none", int | None), _parse_value("'x y'", str)
    ('none', None, 'x y')
    >>> _parse_value("[flip, translate]"), _parse_value("[2, 5]"), _parse_value("d4")
    (['flip', 'translate'], [2, 5], 'd4')
    """
    if tp is str:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return raw
        return value if isinstance(value, str) else raw
    if raw.lower() in ("null", "none", "~"):
        return None
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if raw.startswith("[") and raw.endswith("]") and len(raw) < 10_000:
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return raw


def _plain(o: object) -> object:
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    return o


def _type_name(tp: object) -> str:
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: object, tp: object, where: str) -> object:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            f"{where} must be {' or '.join(_type_name(a) for a in args)}, got "
            f"{short_repr(value)}"
            f" ({type(value).__name__})"
        )
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {short_repr(value)}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"section {where!r} must be a mapping, got {short_repr(value)}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an int beyond the float range
                value = math.inf
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value}")
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
        if value is None or isinstance(value, bool | int | float):  # YAML read it as such
            text = "null" if value is None else str(value).lower()
            raise ConfigError(f"{where} must be str, got {short_repr(value)} "
                              f"({type(value).__name__}); to give the text, quote it "
                              f"({where.rsplit('.', 1)[-1]}: '{text}')")
    else:  # pragma: no cover - every field type is handled above
        return value
    raise ConfigError(
        f"{where} must be {_type_name(tp)}, got {short_repr(value)} ({type(value).__name__})"
    )


def _build(cls: type, d: dict, prefix: str) -> object:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names), key=repr)
    if unknown:
        where = f"section {prefix!r}" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key(s) {short_repr(unknown)} in {where}; valid keys: "
            f"{', '.join(names)}"
        )
    kwargs = {
        k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in d.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None
