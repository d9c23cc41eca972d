"""The report's HTML pieces: escaped text, tables, embedded PNGs, paths relative to the page.

Everything a run directory says is text to the page: :func:`esc` escapes it, and every table
cell goes through it. Figures and thumbnails are PNG data URIs, so the page needs no other file.

A report is meant to be mailed, so no absolute path of the machine that wrote it appears on the
page: :func:`relative_path` writes a path relative to the report's folder, and
:func:`relative_paths` does so for every absolute path string inside a config or manifest.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sidda._text import fmt_cell, missing_glyphs_logged

__all__ = ["CSS", "esc", "figure_to_data_uri", "fmt", "img", "png_data_uri", "pre",
           "relative_path", "relative_paths", "table"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1400px;padding:0 1rem;color:#222;line-height:1.4}
h1{border-bottom:2px solid #4c72b0}h2{margin-top:2.2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f0f3f8}td.l,th.l{text-align:left}th.c{text-align:center}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem;max-height:28rem}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}
.note{color:#555;font-size:.88rem;max-width:60rem}
details{margin:.5rem 0}summary{cursor:pointer;font-weight:600}
.alarm{background:#fde2e1;border:2px solid #c0392b;color:#7b1d14;padding:.4rem .7rem;
margin:.6rem 0;font-weight:600}td.alarm{font-weight:700;padding:.25rem .5rem}
td.hi{background:#fdebd0;font-weight:600}td.na{color:#777;text-align:left}
.gallery td{vertical-align:top}.wide{overflow-x:auto}.wide td{white-space:nowrap}
.thumb{display:inline-block;margin:2px;text-align:center;font-size:.72rem;color:#444}
.thumb img{display:block;margin:0;width:64px;height:64px;image-rendering:pixelated;
max-width:none}
"""


def esc(x: object) -> str:
    """``x`` as HTML text (quotes too, so it may stand in an attribute)."""
    return html.escape(str(x), quote=True)


def fmt(v: object) -> str:
    """A table cell: 4 decimals for a float, a dash for None."""
    return fmt_cell(v, missing="\u2013")


def table(head: Sequence[str] | None, rows: Sequence[Sequence[object]], *, left: int = 1) -> str:
    """An HTML table of escaped cells; the first ``left`` columns are left-aligned."""
    def cell(tag: str, i: int, v: object) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{esc(fmt(v))}</{tag}>"

    out = ["<table>"]
    if head:
        out += ["<thead><tr>", *(cell("th", i, h) for i, h in enumerate(head)), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        out += ["<tr>", *(cell("td", i, v) for i, v in enumerate(row)), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def figure_to_data_uri(fig: Any, *, dpi: int = 90) -> str:
    """PNG bytes of a matplotlib Figure as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    with missing_glyphs_logged():
        fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_data_uri(rgb: np.ndarray) -> str:
    """An 8-bit image (H, W, 3) as an RGB PNG ``data:`` URI (Pillow, which matplotlib needs)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(  # (H, W, 3): RGB
        buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(fig: Any, alt: str, **data: object) -> str:
    """``<img>`` of a figure; ``data`` become ``data-*`` attributes (``data_curves=3``)."""
    attrs = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in data.items())
    return f'<img src="{figure_to_data_uri(fig)}" alt="{esc(alt)}"{attrs}>'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def relative_path(path: str | Path, base: str | Path) -> str:
    """``path`` relative to the folder ``base`` (both resolved), in POSIX form.

    >>> relative_path("/data/survey", "/home/me/reports")
    '../../../data/survey'
    >>> relative_path("/home/me/runs/a", "/home/me")
    'runs/a'
    """
    p, b = Path(path).resolve(), Path(base).resolve()
    try:
        rel = os.path.relpath(p, b)
    except ValueError:  # another drive (Windows): no relative path exists
        return f".../{p.name}"
    return Path(rel).as_posix()


def relative_paths(obj: Any, base: str | Path) -> Any:
    """A copy of a JSON-like ``obj`` with every absolute path string made relative to ``base``.

    >>> relative_paths({"path": "/r/data", "n": [1, "/r/x"], "name": "a/b"}, "/r")
    {'path': 'data', 'n': [1, 'x'], 'name': 'a/b'}
    """
    if isinstance(obj, dict):
        return {k: relative_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [relative_paths(v, base) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        return relative_path(obj, base)
    return obj
