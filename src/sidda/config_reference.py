"""The config reference (docs/config.md), generated from the config dataclasses.

Every key of a run's YAML config is a field of :class:`~sidda.config.RunConfig` or of one of
its sections (``data``, ``model``, ``loss``, ``train``, ``dist``). Its meaning is the entry of
the field in the ``Attributes:`` section of its dataclass's docstring, and its default is the
field's default, so the reference cannot drift from the code: a test compares docs/config.md
with :func:`render_reference`, and fails for a field without a documented meaning.

Regenerate the file with::

    python -m sidda.config_reference > docs/config.md
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys

from sidda.config import RunConfig
from sidda.methods.config import OPTIONS, VARIANTS, defaults

__all__ = ["field_docs", "render_reference"]

_ENTRY = re.compile(r"^(\w+)(?: \([^)]*\))?:\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` entries of a dataclass docstring, one line of text per field.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example:
    ...     '''Two options.
    ...
    ...     Attributes:
    ...         size: Side of the images,
    ...             in pixels.
    ...         seed: The seed.
    ...     '''
    ...     size: int = 8
    ...     seed: int = 0
    >>> field_docs(Example)
    {'size': 'Side of the images, in pixels.', 'seed': 'The seed.'}
    """
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    try:
        start = lines.index("Attributes:") + 1
    except ValueError:
        return {}
    out: dict[str, str] = {}
    name = None
    for line in lines[start:]:
        if line and not line.startswith(" "):  # the next section
            break
        text = line.strip()
        m = _ENTRY.match(text) if line.startswith("    ") and not line.startswith("     ") else None
        if m:
            name = m.group(1)
            out[name] = m.group(2)
        elif name and text:
            out[name] += " " + text
    return {k: _plain(v) for k, v in out.items()}


def _plain(text: str) -> str:
    """Sphinx roles to plain Markdown code: ``:class:`~a.B``` -> ```B```."""
    text = re.sub(r":mod:`~?([\w.]+)`", r"`\1`", text)
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:  # pragma: no cover - every config field has a default
        return "(required)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value}`"


def _type(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    t = t.replace("None", "null").replace("tuple[int, ...]", "list of int")
    t = t.replace("tuple[str, ...]", "list of str")
    return t.replace(" | ", " or ")


def _section(title: str, cls: type, prefix: str) -> list[str]:
    docs = field_docs(cls)
    summary = (inspect.getdoc(cls) or "").split("\n\n", 1)[0].replace("\n", " ")
    out = [f"## {title}", "", _plain(summary), "", "| key | type | default | meaning |",
           "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if _is_section(f):
            continue  # a nested section, rendered on its own
        meaning = docs.get(f.name)
        if not meaning:
            raise ValueError(f"{cls.__name__}.{f.name} has no entry in the Attributes: section "
                             "of its docstring; document it there")
        meaning = meaning.replace("|", "\\|")
        out.append(f"| `{prefix}{f.name}` | {_type(f)} | {_default(f)} | {meaning} |")
    return out + [""]


def _is_section(f: dataclasses.Field) -> bool:
    return isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory)


def _yaml_value(v: object) -> str:
    """``v`` as YAML writes it: null, true, false, the rest as Python prints it."""
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _method_defaults() -> list[str]:
    out = ["### The defaults of each method", "",
           "A `loss` option left `null` takes the default of the chosen method (and, for "
           "`sidda`, of its variant); setting an option of another method is an error.", "",
           "| method | options and defaults |", "|---|---|"]
    for method in OPTIONS:
        variants = VARIANTS if method == "sidda" else (None,)
        for variant in variants:
            opts = defaults(method, variant)
            label = f"`{method}`" + (f" (`variant: {variant}`)" if variant else "")
            cells = ", ".join(f"`{k}: {_yaml_value(v)}`" for k, v in opts.items()
                              if k != "variant")
            out.append(f"| {label} | {cells or '(none)'} |")
    return out + [""]


def render_reference() -> str:
    """docs/config.md: every config key with its type, default and meaning."""
    lines = [
        "# Config reference",
        "",
        "<!-- Generated by `python -m sidda.config_reference > docs/config.md`; do not edit. -->",
        "",
        "A run is described by one YAML file (`sidda train --config FILE`) whose sections map "
        "one-to-one on the keys below; any key can also be set on the command line with "
        "`--set section.key=value` (e.g. `--set train.epochs=5 model.name=d4`). Unknown keys "
        "and values of the wrong type are errors. `null` is YAML for None. On the command "
        "line a key of type str takes the text as it is (`--set data.normalize=none` is the "
        "string `none`); other keys read `null`/`none` as None, `true`/`false` and numbers "
        "as such. In a YAML file quote text that YAML would read otherwise (`name: 'true'`). "
        "YAML merge keys (`<<: *anchor`) are not supported: write the keys out.",
        "",
        "```yaml",
        "name: my_run            # the run folder is out_dir/name",
        "data:  {path: data/shapes, target_suffix: _noise}",
        "model: {name: cnn}",
        "loss:  {method: sidda}  # robust SIDDA; variant: paper for the authors' computation",
        "train: {epochs: 30, warmup: 10, seed: 0}",
        "```",
        "",
    ]
    lines += _section("Top level", RunConfig, "")
    for f in dataclasses.fields(RunConfig):
        if _is_section(f):
            lines += _section(f"`{f.name}`", f.default_factory, f"{f.name}.")
            if f.name == "loss":
                lines += _method_defaults()
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover - exercised through the docs test
    sys.stdout.write(render_reference())
