"""Run directories: atomic writes, checkpoints, and what a run records about itself.

A run is a self-describing folder::

    runs/<name>/
        config.yaml          the resolved RunConfig
        argv.txt             the command line that made it (and one line per resume)
        environment.json     package versions, device, seed, data checksums
        data_manifest.json   the data folder's manifest (how the data was made)
        run.json             model shape and data sizes; written last (setup complete)
        history.csv          one row per epoch (true per-epoch means)
        history_steps.csv    one row per optimisation step
        checkpoints/{final,best_val_acc,best_val_loss}.pt   models
        checkpoints/last.pt  everything `sidda train --resume` needs
        metrics.json         written by `sidda evaluate`, with the per-image *.npy arrays
        eval/<data>/         `sidda evaluate --data OTHER`: the same files for other data
        .lock                locked by the process that trains or evaluates (lock_run)

Every file is written atomically (temporary file in the same folder, fsync, rename), so a
kill at any instant leaves the previous complete version in place; a failed write (full disk,
a path that is not a folder) raises :class:`OSError` naming the file and leaves no temporary
file behind. Checkpoints carry the SHA-256 of their bytes (:func:`save_checkpoint`), checked
when they are loaded (:func:`load_checkpoint`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import pickle
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from sidda.errors import InputError, one_line

__all__ = [
    "CHECKPOINTS",
    "CHECKPOINT_MAGIC",
    "HISTORY",
    "HISTORY_STEPS",
    "History",
    "LOCK_NAME",
    "RESUME_CHECKPOINT",
    "atomic_dir",
    "atomic_write",
    "environment_info",
    "fsync_dir",
    "load_checkpoint",
    "load_history",
    "lock_run",
    "save_checkpoint",
    "write_csv",
    "write_json",
]

logger = logging.getLogger(__name__)

#: Model checkpoints that evaluation and selection consider.
CHECKPOINTS = ("final", "best_val_acc", "best_val_loss")
#: The checkpoint that ``sidda train --resume`` continues from (see :mod:`sidda.checkpointing`).
RESUME_CHECKPOINT = "last"


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
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Build a folder in a staging sibling and rename it to ``out`` when the block succeeds.

    Yields the staging path (not yet created: the block creates it, e.g. with
    ``write_layout``). ``out`` must not exist, or be an empty folder. If the block raises, or
    the process is killed, ``out`` is untouched; staging folders that killed processes left
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


# ------------------------------------------------------------------------------ history

#: The per-epoch and per-step history files of a run.
HISTORY, HISTORY_STEPS = "history.csv", "history_steps.csv"


@dataclass
class History:
    """What a run logged: one dict per epoch and one per step.

    Written by training (:meth:`write`) and read back by evaluation, plots and reports
    (:meth:`read`, :func:`load_history`): the one place that knows the file names.
    """

    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    stopped_early: bool = False

    def write(self, run_dir: str | Path) -> None:
        """Write ``history.csv`` and ``history_steps.csv`` atomically."""
        write_csv(Path(run_dir) / HISTORY, self.epochs)
        write_csv(Path(run_dir) / HISTORY_STEPS, self.steps)

    @classmethod
    def read(cls, run_dir: str | Path) -> History:
        """The epochs and steps a run wrote (empty lists for absent files)."""
        run_dir = Path(run_dir)
        return cls(load_history(run_dir / HISTORY), load_history(run_dir / HISTORY_STEPS))


def load_history(path: str | Path) -> list[dict]:
    """Rows of ``history.csv`` (or ``history_steps.csv``): numbers as floats, blanks as None.

    Args:
        path: The CSV file, or a run directory (reads its ``history.csv``).

    Returns:
        One dict per row; an absent file gives ``[]``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for k, v in raw.items():
                if v is None or v == "":
                    row[k] = None
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            rows.append(row)
    return rows


#: First bytes of a checkpoint file: this tag, then the SHA-256 of the rest (torch.save bytes).
CHECKPOINT_MAGIC = b"SIDDA-CKPT-SHA256\n"
_DIGEST_BYTES = 32


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Atomically save a checkpoint dict with ``torch.save``, behind a SHA-256 of its bytes.

    The file is :data:`CHECKPOINT_MAGIC`, the 32-byte SHA-256 digest of the ``torch.save``
    bytes, then those bytes: :func:`load_checkpoint` refuses a file whose bytes changed after
    they were written (a flipped bit, a partial copy). Refuses to save non-finite weights: a
    checkpoint is only ever a usable model.
    """
    for key in ("model", "loss"):
        for name, t in (payload.get(key) or {}).items():
            if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"refusing to save {path}: {key}.{name} holds NaN or inf")
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return atomic_write(path, CHECKPOINT_MAGIC + hashlib.sha256(body).digest() + body)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, after checking its SHA-256.

    A file without the checksum header (written by an older sidda) is loaded with a warning.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: the file is damaged (checksum mismatch, truncated) or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    head = raw[: len(CHECKPOINT_MAGIC)]
    if len(head) == len(CHECKPOINT_MAGIC) and 0 < sum(
            a != b for a, b in zip(head, CHECKPOINT_MAGIC, strict=True)) <= 2:
        raise InputError(f"{path}: damaged checkpoint (its header was changed after it was "
                         "written). Restore it from a backup, or start the run again "
                         "(`sidda train --config ... --force`)")
    if raw.startswith(CHECKPOINT_MAGIC):
        start = len(CHECKPOINT_MAGIC)
        digest, body = raw[start : start + _DIGEST_BYTES], raw[start + _DIGEST_BYTES :]
        if hashlib.sha256(body).digest() != digest:
            raise InputError(
                f"{path}: damaged checkpoint (its SHA-256 does not match the one written with "
                "it); it was changed or cut after it was written. Restore it from a backup, or "
                "start the run again (`sidda train --config ... --force`)"
            )
    else:
        body = raw
    try:
        ckpt = torch.load(io.BytesIO(body), map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError,
            MemoryError) as e:  # a damaged length field can ask for any size
        raise InputError(f"{path}: not a readable checkpoint ({one_line(e, limit=200)}); it "
                         "was not written by sidda, or the file was damaged after it was "
                         "written") from None
    if not isinstance(ckpt, dict):
        raise InputError(f"{path}: not a sidda checkpoint (holds {type(ckpt).__name__})")
    if body is raw:
        logger.warning("%s has no checksum (written by an older sidda); it cannot be checked "
                       "for damage", path)
    return ckpt


# ------------------------------------------------------------------------------ run lock

#: The lock file inside a run directory (:func:`lock_run`).
LOCK_NAME = ".lock"


@contextlib.contextmanager
def lock_run(run_dir: str | Path, *, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (created if needed) for the ``with`` block.

    ``sidda train``, ``--resume`` and ``evaluate`` each hold it while they change the folder,
    so two of them never write into one run at once. The lock is ``flock`` on
    ``run_dir/.lock``, released by the kernel when the process ends, however it ends: a
    killed process leaves no stale lock. On a read-only file system nothing can write, and no
    lock is taken.

    Args:
        run_dir: The run directory.
        what: What the holder does (``"train"``, ``"evaluate"``), for the refusal message.

    Raises:
        InputError: another process holds the lock.
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
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno != errno.EROFS:
                raise OSError(e.errno, f"could not lock {run_dir}: {e.strerror or e}") from None
            logger.debug("%s is on a read-only file system; not locked", run_dir)
            yield
            return
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
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
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
