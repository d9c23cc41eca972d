"""``main``: parse the command line, run the command, and map what it raised to an exit status.

Exit statuses: 0 done; 2 bad input; 1 a diverged run, a failed write or an internal error;
128 + N stopped by signal N (the package docstring, :mod:`sidda.cli`, says more).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from sidda.cli.console import end_progress, setup_logging
from sidda.cli.parser import build_parser
from sidda.errors import InputError, one_line

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "Terminated", "main"]

logger = logging.getLogger("sidda")

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _error(e: BaseException) -> None:
    print(f"sidda: error: {one_line(e)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sidda`` console script.

    Exit statuses: 0 done; 2 bad input (:class:`~sidda.errors.InputError`, which config and
    data errors are, and a missing or existing path); 1 a diverged run, a failed write, or an
    internal error (a bug: any other exception, reported as such); 128 + N stopped by signal N.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = ["sidda", *(sys.argv[1:] if argv is None else argv)]  # recorded in argv.txt
    setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    try:
        with _sigterm_interrupts():
            return args.func(args)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line and a status
        end_progress()  # the message starts on a line of its own
        return _failure(e)
    except KeyboardInterrupt as e:
        end_progress()
        if isinstance(e, Terminated):
            print("sidda: interrupted by SIGTERM", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("sidda: interrupted", file=sys.stderr)
        return 130


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a command ran outside training (which saves ``last.pt`` first:
    :class:`~sidda.train.TrainingInterrupted`); raised where the program was, as Ctrl-C raises
    :class:`KeyboardInterrupt`, so that ``finally`` blocks and staging clean-ups run."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the ``with`` block (main thread only); the
    previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _training_errors() -> tuple[type, type]:
    """(NonFiniteError, TrainingInterrupted), or two types nothing raises when training was
    never imported (the parse step and the data commands load no torch)."""
    recovery = sys.modules.get("sidda.train.recovery")
    if recovery is None:
        return (_NotRaised, _NotRaised)
    return (recovery.NonFiniteError, recovery.TrainingInterrupted)


class _NotRaised(Exception):
    """Stands for an exception class whose module was never imported."""


def _file_in_the_way(e: Exception) -> bool:
    """Whether ``e`` is the system's refusal of a path that runs through a file (a folder was
    needed there: ``--out FILE/x``, ``out_dir`` naming a file)."""
    if not isinstance(e, OSError):
        return False
    if e.errno == errno.ENOTDIR:
        return True
    return (e.errno == errno.EEXIST and isinstance(e.filename, str)
            and os.path.lexists(e.filename) and not os.path.isdir(e.filename))


def _failure(e: Exception) -> int:
    """Print what went wrong in one line; the exit status."""
    NonFiniteError, TrainingInterrupted = _training_errors()  # noqa: N806
    if _file_in_the_way(e):
        print(f"sidda: error: {one_line(e)}; a part of that path is a file where a folder is "
              "needed: choose another path, or move the file", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(e, InputError | FileExistsError | FileNotFoundError):
        _error(e)
        return EXIT_USAGE
    if isinstance(e, TrainingInterrupted):  # last.pt is written; schedulers read 128 + signal
        print(f"sidda: {e}", file=sys.stderr)
        return e.exit_status
    if isinstance(e, OSError):  # a write failed (full disk ...), or a path the system refuses
        _error(e)
        return EXIT_USAGE if e.errno == errno.ENAMETOOLONG else EXIT_FAILURE
    if isinstance(e, NonFiniteError):  # diverged
        _error(e)
        return EXIT_FAILURE
    custom = sys.modules.get("sidda.models.custom")  # imported when a model was built
    if custom is not None and (err := custom.network_error(e)) is not None:
        logger.debug("error in a custom network", exc_info=e)
        _error(err)
        return EXIT_USAGE
    # not the input's fault: say so, in one line
    logger.debug("internal error", exc_info=e)
    print(f"sidda: internal error (a bug in sidda, or a computation that diverged): "
          f"{type(e).__name__}: {one_line(e)}; rerun with -v for the traceback",
          file=sys.stderr)
    return EXIT_FAILURE
