"""Numbers as text in the tables that sidda prints and renders.

>>> fmt_cell(0.123456), fmt_cell(None), fmt_cell(3), fmt_cell(None, missing="\\u2013")
('0.1235', '-', '3', '–')
"""

from __future__ import annotations

__all__ = ["fmt_cell"]


def fmt_cell(v: object, digits: int = 4, *, missing: str = "-") -> str:
    """A table cell: a float to ``digits`` places, None as ``missing``, anything else as text."""
    if v is None:
        return missing
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)
