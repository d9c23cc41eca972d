"""docs/config.md is generated from the config dataclasses and must not go stale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sidda.config import RunConfig
from sidda.config_reference import field_docs, render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_the_generated_reference():
    assert DOC.read_text() == render_reference(), (
        "docs/config.md is stale; regenerate it: python -m sidda.config_reference > docs/config.md"
    )


def test_every_key_of_every_section_is_in_the_reference():
    text = render_reference()
    for section in dataclasses.fields(RunConfig):
        cls = section.default_factory
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            assert f"| `{section.name}` |" in text
            continue
        for f in dataclasses.fields(cls):
            assert f"| `{section.name}.{f.name}` |" in text, f"{section.name}.{f.name} missing"
            assert field_docs(cls).get(f.name), f"{cls.__name__}.{f.name} is undocumented"


def test_an_undocumented_field_is_refused():
    from sidda.config_reference import _section

    @dataclasses.dataclass
    class Partly:
        """Two fields.

        Attributes:
            a: Documented.
        """

        a: int = 1
        b: int = 2

    with pytest.raises(ValueError, match="Partly.b has no entry"):
        _section("x", Partly, "x.")


def test_defaults_in_the_reference_are_the_dataclass_defaults():
    text = render_reference()
    assert "| `train.epochs` | int | `50` |" in text
    assert "| `data.image_size` | int or null | `null` |" in text
    assert "`sidda` (`variant: robust`) | `eta_mode: clean`" in text
