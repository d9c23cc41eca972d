"""Text in the tables that sidda prints and renders, and in the labels it draws.

>>> fmt_cell(0.123456), fmt_cell(None), fmt_cell(3), fmt_cell(None, missing="\\u2013")
('0.1235', '-', '3', '–')
"""

from __future__ import annotations

__all__ = ["DASH", "escape_mathtext", "fmt_cell"]

#: The cell of a number that is missing, in the tables read by people (an en dash).
DASH = "\u2013"


def fmt_cell(v: object, digits: int = 4, *, missing: str = "-") -> str:
    """A table cell: a float to ``digits`` places, None as ``missing``, anything else as text."""
    if v is None:
        return missing
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def escape_mathtext(text: object) -> str:
    r"""``text`` with every ``$`` escaped, so matplotlib draws it literally, never as math.

    Use it for every user-given string drawn with matplotlib (class names, run names, folder
    names): ``$\frac{a}{$`` would fail to parse and ``price_$5-$10`` would be drawn as math.

    >>> escape_mathtext("price_$5-$10")
    'price_\\$5-\\$10'
    """
    return str(text).replace("$", r"\$")
