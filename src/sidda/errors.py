"""The error that means "the input is wrong", and how it is told to the user.

:class:`InputError` (a :class:`ValueError`) is raised for a problem the user can fix: a
config value, a data file, a command-line option, a run directory in use. The ``sidda``
command prints it as one line and exits with status 2. Every other exception is a bug or a
diverged computation (status 1): a :class:`ValueError` from NumPy or scikit-learn deep in a
computation does not mean the input was wrong.

:class:`ConfigError` (a config that cannot be used; :mod:`sidda.config` re-exports it, so
that the methods and the trainer, below the config, raise it too) and
:class:`~sidda.datasets.DataError` are input errors.
"""

from __future__ import annotations

import reprlib

__all__ = ["MAX_MESSAGE", "ConfigError", "InputError", "one_line", "short_repr"]

#: Longest error message the command line prints (characters).
MAX_MESSAGE = 2000

_MAX_REPR = 160
_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 8
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40


class InputError(ValueError):
    """Input that cannot be used (config, data, option, path), with a message saying how to fix it.

    >>> issubclass(InputError, ValueError)
    True
    """


class ConfigError(InputError):
    """A configuration that cannot be used, with a message that says how to fix it."""


def short_repr(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters, without building the whole repr.

    Deeply nested or huge values (a YAML "billion laughs" alias bomb) cost no more than a small
    one.

    >>> short_repr(list(range(100)))
    '[0, 1, 2, 3, 4, 5, 6, 7, ...]'
    """
    text = _REPR.repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 4] + " ..."


def one_line(e: BaseException, *, limit: int = MAX_MESSAGE) -> str:
    """The message of ``e`` on one line, at most ``limit`` characters.

    >>> one_line(ValueError("a\\n b"))
    'a b'
    """
    text = str(e)
    if len(text) > 4 * limit:  # do not split megabytes of text
        text = text[: 4 * limit]
    text = " ".join(text.split()) or type(e).__name__
    if len(text) > limit:
        text = text[: limit - 30] + f" ... ({len(str(e))} characters cut)"
    return text
