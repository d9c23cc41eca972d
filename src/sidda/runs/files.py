"""Atomic writes: one file (:func:`atomic_write`), one folder (:func:`atomic_dir`), JSON and CSV."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    ``data`` is bytes, text, or a function that writes into the open binary file (e.g.
    ``lambda f: np.save(f, arr)``, which streams a large array without a copy in memory). The
    temporary file sits in the same folder (so the rename is atomic); the folder is fsynced
    after the rename, so the new name survives a power cut. On any failure the temporary file
    is removed and ``path`` keeps its previous content. This is the only function in sidda
    that writes a file in place of another.

    Raises:
        OSError: with the path and the cause (full disk, not a folder, no permission) in the
            message, and the original ``errno``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        hint = {errno.ENOSPC: "the disk is full; free some space",
                errno.EDQUOT: "the disk quota is exhausted; free some space",
                errno.EFBIG: "the file is larger than this system allows"}.get(e.errno, "")
        raise OSError(
            e.errno, f"could not write {path}: {e.strerror or e}" + (f" ({hint})" if hint else "")
        ) from None
    except BaseException:  # e.g. KeyboardInterrupt mid-write: leave no temporary file behind
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_dir(out: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a folder in a staging sibling and rename it to ``out`` when the block succeeds.

    Yields the staging path (not yet created: the block creates it, e.g. with
    ``write_layout``). ``out`` must not exist, or be an empty folder, unless ``replace``: then
    a previous ``out`` is moved aside and removed once the new one is in place (a kill between
    the two renames leaves no ``out``, never a mixed one). If the block raises, or the process
    is killed, ``out`` is untouched; staging folders that killed processes left
    beside ``out`` (``.NAME.staging-PID-...``) are removed on the next call.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with atomic_dir(root / "data") as tmp:
    ...     tmp.mkdir()
    ...     _ = (tmp / "a.txt").write_text("a")
    >>> sorted(p.name for p in root.iterdir()), (root / "data" / "a.txt").read_text()
    (['data'], 'a')
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out.parent)
    holder = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    try:
        yield holder / "d"
        if out.exists():
            if replace:
                os.replace(out, holder / "old")
            else:
                out.rmdir()  # an empty folder only; anything else raises OSError
        os.replace(holder / "d", out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _remove_stale_staging(parent: Path) -> None:
    """Remove the ``.NAME.staging-PID-...`` folders whose process no longer exists."""
    for p in parent.glob(".*.staging-*"):
        pid = p.name.rsplit(".staging-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or not p.is_dir() or _alive(int(pid)):
            continue
        logger.info("removing %s, left by a sidda process that was stopped", p)
        shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - the folder itself is gone or unreadable
        pass


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, obj: object) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o: object) -> object:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def write_csv(path: str | Path, rows: Iterable[dict]) -> Path:
    """Atomically write dict rows as CSV; the header is the union of keys in first-seen order."""
    rows = list(rows)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, restval="")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return atomic_write(path, buf.getvalue())
