"""Atomic writes: one file (:func:`atomic_write`), one folder (:func:`atomic_dir`), JSON and CSV;
careful reads: a regular file never through a link (:func:`read_regular`), the header of an
``.npy`` file (:func:`npy_problem`)."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sidda.errors import InputError, one_line

logger = logging.getLogger(__name__)

def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    ``data`` is bytes, text, or a function that writes into the open binary file (e.g.
    ``lambda f: np.save(f, arr)``, which streams a large array without a copy in memory). The
    temporary file sits in the same folder (so the rename is atomic); the folder is fsynced
    after the rename, so the new name survives a power cut. On any failure the temporary file
    is removed and ``path`` keeps its previous content. A symbolic link at ``path`` is
    replaced, never written through. This is the only function in sidda that writes a file in
    place of another.

    Raises:
        OSError: with the path and the cause (full disk, not a folder, no permission) in the
            message, and the original ``errno``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _unlink_quietly(tmp)  # left by a killed process of the same id: never written through
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with open(os.open(tmp, flags, 0o666), "wb") as f:
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


def check_new_folder(out: str | Path, *, option: str = "--out") -> Path:
    """``out``, where a command is about to make a folder, unless a file is in the way.

    >>> check_new_folder("/no/such/folder")
    PosixPath('/no/such/folder')

    Raises:
        InputError: ``out``, or the nearest existing folder above it, is a file (named with
            ``option``, before any work is done).
    """
    out = Path(out)
    for p in (out, *out.parents):
        if os.path.lexists(p):
            if p.is_dir():
                break
            if p == out:
                raise InputError(f"{option} {out} is a file; give a folder, e.g. {out.stem}_data")
            raise InputError(f"{option} {out}: {p} is a file, not a folder; choose another path")
    return out


def publish_files(folder: str | Path,
                  files: Mapping[str, bytes | str | Callable[[BinaryIO], object]],
                  *, last: str, own_folder: bool, staging: str, remove: Iterable[str] = ()) -> Path:
    """Write ``files`` (name -> data, as :func:`atomic_write` takes it) into ``folder`` as a whole.

    Everything is first written into the staging folder ``folder/<staging>``.
    ``own_folder=True`` (``folder`` holds these files only): the staging folder is renamed into
    place (:func:`atomic_dir`), so a reader sees the old set or the new one. Otherwise ``last``
    (the file that describes the others) is removed first and put back last, and the names in
    ``remove`` that ``files`` lacks are deleted: a kill in between leaves no ``last``. A write
    that fails (a full disk) removes the staging folder and leaves the old files as they were;
    what a killed call left behind is removed first.

    Returns:
        The path of ``last``.
    """
    folder = Path(folder)
    for p in (folder / staging, folder.parent / f".{folder.name}{staging}",
              folder.parent / f".{folder.name}.old"):
        if p.is_dir():
            shutil.rmtree(p)
    if own_folder:
        with atomic_dir(folder, replace=True) as tmp:
            tmp.mkdir()
            for name, data in files.items():
                atomic_write(tmp / name, data)
        return folder / last
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / staging
    tmp.mkdir()
    try:
        for name, data in files.items():
            atomic_write(tmp / name, data)
    except BaseException:  # a full disk, a signal: the old files stay, the partial new go
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (folder / last).unlink(missing_ok=True)
    fsync_dir(folder)
    for name in remove:
        if name not in files:
            (folder / name).unlink(missing_ok=True)  # stale: not part of this set
    for name in files:
        if name != last:
            os.replace(tmp / name, folder / name)
    fsync_dir(folder)
    os.replace(tmp / last, folder / last)
    fsync_dir(folder)
    tmp.rmdir()
    return folder / last


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
    """Atomically write ``obj`` as indented JSON (:func:`json_text`)."""
    return atomic_write(path, json_text(obj))


def json_text(obj: object) -> str:
    """``obj`` as indented JSON text; arrays and tensors become lists, paths strings.

    >>> print(json_text({"a": Path("b")}), end="")
    {
      "a": "b"
    }
    """
    return json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"


def _jsonable(o: object) -> object:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def csv_cell(value: object) -> object:
    """A value as :func:`write_csv` writes it: None empty, a list or tuple its items separated
    by spaces (None items empty), anything else as it is.

    >>> csv_cell([0.5, None, True]), csv_cell(None), csv_cell(3)
    ('0.5  True', '', 3)
    """
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join("" if v is None else str(v) for v in value)
    return value


def write_csv(path: str | Path, rows: Iterable[dict], *, fields: Sequence[str] = ()) -> Path:
    """Atomically write dict rows as CSV; the header is ``fields``, then the other keys of the
    rows in first-seen order (a file of no rows holds the header alone); cells by
    :func:`csv_cell`."""
    rows = list(rows)
    fields = list(fields)
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, restval="")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in r.items()})
    return atomic_write(path, buf.getvalue())


def describe_file(path: str | Path) -> str:
    """What is at ``path``, for a message: ``"a FIFO"``, ``"a symbolic link"``, ...

    >>> describe_file("/")
    'a folder'
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing"
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def read_regular(path: str | Path) -> bytes:
    """The bytes of ``path``, refusing a symbolic link or anything but a regular file.

    Raises:
        FileNotFoundError: nothing at ``path``.
        InputError: a link, a FIFO, a folder ... at ``path`` (named in the message).
    """
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        fd = None
    if fd is not None:
        with os.fdopen(fd, "rb") as f:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return f.read()
    raise InputError(f"{path} is {describe_file(path)}, not a regular file; sidda writes "
                     "nothing through it: remove it and try again")


def npy_problem(path: str | Path) -> str | None:
    """Why the ``.npy`` file at ``path`` cannot be read as numbers, or None (reads the header).

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "a.npy"
    >>> np.save(f, np.zeros(3)); npy_problem(f)
    >>> _ = f.write_bytes(f.read_bytes()[:-8]); npy_problem(f)
    '144 bytes where its header needs 152; cut short?'
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            major, _ = fmt.read_magic(f)
            read = {1: fmt.read_array_header_1_0, 2: fmt.read_array_header_2_0}.get(major)
            if read is None:
                return f"an .npy file of version {major}, which sidda does not write"
            shape, _, dtype = read(f)
            start = f.tell()
    except (ValueError, EOFError, OSError, SyntaxError) as e:
        return f"not an .npy array: {one_line(e, limit=200)}"
    if dtype.hasobject:
        return "holds Python objects, not numbers"
    need, size = start + math.prod(shape) * dtype.itemsize, os.stat(path).st_size
    return None if size == need else f"{size} bytes where its header needs {need}; cut short?"
