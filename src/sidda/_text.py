"""Text in the tables that sidda prints and renders, and in the labels it draws.

>>> fmt_cell(0.123456), fmt_cell(None), fmt_cell(3), fmt_cell(None, missing="\\u2013")
('0.1235', '-', '3', '–')
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

__all__ = ["DASH", "escape_mathtext", "fmt_cell", "missing_glyphs_logged"]

logger = logging.getLogger(__name__)

#: The cell of a number that is missing, in the tables read by people (an en dash).
DASH = "\u2013"
#: matplotlib's warning for a character its font cannot draw.
_GLYPH = re.compile(r"Glyph (\d+) .*missing from font\(s\) (.+?)\.?$")
_REPORTED: set[str] = set()  # characters already named in a warning, in this process


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


@contextlib.contextmanager
def missing_glyphs_logged() -> Iterator[None]:
    """Draw figures in this block: characters the font lacks (CJK, emoji in class names) are
    named in one log warning, once per process, instead of matplotlib's warning per glyph
    (with a source line); other warnings pass through as they are.

    >>> import warnings
    >>> with missing_glyphs_logged():
    ...     warnings.warn("Glyph 29356 (\\N{CJK UNIFIED IDEOGRAPH-72AC}) missing from font(s) "
    ...                   "DejaVu Sans.")
    >>> "\u72ac" in _REPORTED
    True
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    fonts, chars = set(), []
    for w in caught:
        m = _GLYPH.search(str(w.message))
        if m is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        c = chr(int(m.group(1)))
        fonts.add(m.group(2))
        if c not in _REPORTED and c not in chars:
            chars.append(c)
    if chars:
        _REPORTED.update(chars)
        logger.warning("the font (%s) has no glyph for %s, used in class or run names: they "
                       "are drawn as empty boxes", ", ".join(sorted(fonts)), " ".join(chars))
