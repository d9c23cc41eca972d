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
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from sidda.errors import InputError, one_line

__all__ = [
    "CHECKPOINTS",
    "CHECKPOINT_MAGIC",
    "LOCK_NAME",
    "RESUME_CHECKPOINT",
    "atomic_write",
    "environment_info",
    "fsync_dir",
    "load_checkpoint",
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


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    The temporary file sits in the same folder (so the rename is atomic); the folder is
    fsynced after the rename, so the new name survives a power cut. On any failure the
    temporary file is removed and ``path`` keeps its previous content.

    Raises:
        OSError: with the path and the cause (full disk, not a folder, no permission) in the
            message, and the original ``errno``.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
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
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as e:
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
