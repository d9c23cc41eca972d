"""The run lock (one process changes a run directory at a time) and the environment record."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import platform
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from sidda.errors import InputError
from sidda.runs.files import describe_file

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ run lock

#: The lock file inside a run directory (:func:`lock_run`).
LOCK_NAME = ".lock"


@contextlib.contextmanager
def lock_run(run_dir: str | Path, *, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (created if needed) for the ``with`` block.

    ``sidda train``, ``--resume`` and ``evaluate`` each hold it while they change the folder,
    so two of them never write into one run at once. The lock is ``flock`` on
    ``run_dir/.lock``, released by the kernel when the process ends, however it ends: a
    killed process leaves no stale lock. The lock file is never opened through a symbolic link,
    and anything but a regular file there is refused. On a read-only file system nothing can
    write, and no lock is taken.

    Args:
        run_dir: The run directory.
        what: What the holder does (``"train"``, ``"evaluate"``), for the refusal message.

    Raises:
        InputError: another process holds the lock, or ``run_dir/.lock`` is not a regular file.
    """
    run_dir = Path(run_dir)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    while True:
        try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.EROFS:
                logger.debug("%s is on a read-only file system; not locked", run_dir)
                yield
                return
            if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
                raise _not_a_lock_file(path) from None
            raise OSError(e.errno, f"could not lock {run_dir}: {e.strerror or e}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _not_a_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(e.errno, f"could not lock {run_dir}: {e.strerror or e}") from None
            raise InputError(
                f"{run_dir} is in use by another sidda process ({holder or 'unknown'}); wait "
                f"until it ends, or {what} another run"
            ) from None
        try:  # the folder may have been replaced while we waited: lock the file now there
            same = os.lstat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: sidda {what}\n".encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _not_a_lock_file(path: Path) -> InputError:
    return InputError(f"{path} is {describe_file(path)}, not the regular file that locks a run; "
                      f"remove it (rm {path}) and try again")


def environment_info() -> dict:
    """Versions and platform facts needed to repeat a run."""
    import geomloss
    import numpy

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "geomloss": getattr(geomloss, "__version__", "unknown"),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
    }
    try:
        from importlib.metadata import version

        info["escnn"] = version("escnn")
        info["sidda"] = version("sidda")
    except Exception:  # noqa: BLE001 - metadata is best effort
        pass
    return info
