"""What the command line writes to stderr: the log lines and the one-line progress display.

The progress line is rewritten in place (``\\r``) on a terminal and is never wider than
:data:`MAX_WIDTH` columns (nor than the terminal less one column), so it does not wrap on an
80-column terminal. Before a log line is written the progress line is erased, so an epoch
summary or a warning always starts at the beginning of its own line; the next training step
draws the progress line again below it.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
import weakref
from typing import TextIO

__all__ = ["MAX_WIDTH", "Progress", "elapsed", "end_progress", "setup_logging"]

#: Widest progress line (columns): one less than a classic 80-column terminal.
MAX_WIDTH = 79
_MIN_WIDTH = 20
_PHASE_WIDTH = 11

#: Progress displays that may have a line on the screen.
_LIVE: weakref.WeakSet[Progress] = weakref.WeakSet()


def line_width(stream: TextIO) -> int:
    """Columns a progress line may use on ``stream``: :data:`MAX_WIDTH`, less on a narrow tty."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        tty = False
    if not tty:
        return MAX_WIDTH
    columns = shutil.get_terminal_size((MAX_WIDTH + 1, 24)).columns
    return max(_MIN_WIDTH, min(MAX_WIDTH, columns - 1))


def _num(v: object, digits: int) -> str:
    """A loss as short text: ``digits`` decimals, or 3 significant digits when that is long."""
    if v is None:
        return "-"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "?"
    if not math.isfinite(x):
        return str(x)
    text = f"{x:.{digits}f}"
    return text if len(text) <= digits + 6 else f"{x:.3g}"


def elapsed(seconds: float) -> str:
    """``42s``, ``12m05s`` or ``3h07m``.

    >>> elapsed(42.7), elapsed(725), elapsed(11220)
    ('42s', '12m05s', '3h07m')
    """
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """A one-line progress display, a training callback (``cb(event, record)``).

    ``"step"`` records draw ``epoch E/N step S PHASE ce X da Y  T``; any other event (the end of
    an epoch) erases the line. ``enabled=False`` draws nothing (stderr not a terminal, ``-q``).
    """

    def __init__(self, total_epochs: int, *, enabled: bool, stream: TextIO | None = None,
                 width: int | None = None) -> None:
        self.total = total_epochs
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.t0 = time.perf_counter()
        self.shown = 0  # columns of the line on the screen; 0: none

    def _width(self) -> int:
        return self.width if self.width is not None else line_width(self.stream)

    def line(self, rec: dict) -> str:
        """The text of the progress line for one step record, at most the line width."""
        phase = str(rec.get("phase", ""))[:_PHASE_WIDTH]
        da = rec.get("da")
        text = (f"epoch {rec.get('epoch')}/{self.total} step {rec.get('step')} "
                f"{phase:<{_PHASE_WIDTH}} ce {_num(rec.get('ce'), 3)}"
                + ("" if da is None else f" da {_num(da, 4)}")
                + f"  {elapsed(time.perf_counter() - self.t0)}")
        return text[: self._width()]

    def __call__(self, event: str, rec: dict) -> None:
        if not self.enabled:
            return
        if event == "step":
            text = self.line(rec)
            self.stream.write("\r" + text.ljust(self.shown))
            self.stream.flush()
            self.shown = len(text)
            _LIVE.add(self)
        else:
            self.clear()

    def clear(self) -> None:
        """Erase the progress line (if one is shown) and leave the cursor at its start."""
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0
        _LIVE.discard(self)


def end_progress() -> None:
    """Erase every progress line on the screen (before a log line or an error message)."""
    for p in list(_LIVE):
        p.clear()


class _Handler(logging.StreamHandler):
    """A stream handler that erases the progress line before it writes a record."""

    def emit(self, record: logging.LogRecord) -> None:
        end_progress()
        super().emit(record)


def setup_logging(quiet: bool, verbose: bool, *, prefix: str = "",
                  stream: TextIO | None = None) -> None:
    """Log to stderr (or ``stream``): warnings with ``quiet``, debug with ``verbose``."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("sidda").setLevel(level)
