"""The ``sidda`` command line: ``train``, ``evaluate``, ``predict``, ``report``, ``sweep``,
``compare``, ``config list|new``, ``data make|import-folder|check|show``, ``demo``,
``runs upgrade``.

Parsing imports no torch, escnn or matplotlib (a command's module is imported when it runs), so
``--help`` and argument errors answer at once.

This is the only package that reads argv, loads YAML from the user and configures logging.
Errors in the input (config, data, options, paths, a run in use by another process) print one
line ``sidda: error: ...`` and exit with status 2; a run that diverges (non-finite) or cannot
write its files exits with status 1, and so does an internal error (a bug), which says so; a
run stopped by SIGTERM or SIGINT saves ``last.pt`` and exits with 128 + the signal number
(143, 130), to be continued with ``sidda train --resume RUN_DIR``; any other command stopped
so says it in one line and exits with the same status.

``torchrun --nproc_per_node=N -m sidda train ...`` trains on N processes
(``docs/distributed.md``): rank 0 logs at the chosen level, shows the progress line and prints
the results; the other ranks log warnings only, prefixed with their rank.

* :mod:`~sidda.cli.entry` - :func:`main` and the exit statuses;
* :mod:`~sidda.cli.parser` - :func:`build_parser`;
* :mod:`~sidda.cli.commands`, :mod:`~sidda.cli.data_commands`,
  :mod:`~sidda.cli.config_commands`, :mod:`~sidda.cli.runs_commands` - one thin function per
  command;
* :mod:`~sidda.cli.console` - logging to stderr and the progress line;
* :mod:`~sidda.cli.tables` - the text tables the commands print, and the end-of-training
  summary.
"""

from sidda.cli.console import Progress
from sidda.cli.entry import EXIT_FAILURE, EXIT_USAGE, main
from sidda.cli.parser import build_parser

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "Progress", "build_parser", "main"]
