"""Model checkpoints: their names, and files that carry the SHA-256 of their bytes."""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import re
from pathlib import Path

import torch

from sidda.errors import InputError, one_line, short_repr
from sidda.runs.files import atomic_write

logger = logging.getLogger(__name__)

#: Model checkpoints that evaluation and selection consider.
CHECKPOINTS = ("final", "best_val_acc", "best_val_loss")
#: The checkpoint that ``sidda train --resume`` continues from (:mod:`sidda.train.recovery`).
RESUME_CHECKPOINT = "last"
#: Names of the per-epoch model checkpoints (``train.keep_epoch_checkpoints``): epoch_0007.
EPOCH_CHECKPOINT = re.compile(r"epoch_\d{4,}")


def check_checkpoint_name(name: object) -> str:
    """``name`` if it names a model checkpoint (:data:`CHECKPOINTS` or ``epoch_<n>``).

    >>> check_checkpoint_name("epoch_0012")
    'epoch_0012'

    Raises:
        InputError: any other name.
    """
    if isinstance(name, str) and (name in CHECKPOINTS or EPOCH_CHECKPOINT.fullmatch(name)):
        return name
    raise InputError(f"unknown checkpoint {short_repr(name)}; use one of {', '.join(CHECKPOINTS)}"
                     ", an epoch checkpoint such as epoch_0007 (train.keep_epoch_checkpoints), or "
                     "a label-free rule (entropy, iwv, dev)")


def model_checkpoints(run_dir: str | Path) -> list[str]:
    """The model checkpoints saved in ``run_dir``: :data:`CHECKPOINTS` first, then the epochs."""
    folder = Path(run_dir) / "checkpoints"
    epochs = sorted(p.stem for p in folder.glob("epoch_*.pt") if EPOCH_CHECKPOINT.fullmatch(p.stem))
    return [n for n in CHECKPOINTS if (folder / f"{n}.pt").is_file()] + epochs


def checkpoint_path(run_dir: str | Path, name: str) -> Path:
    """The file of checkpoint ``name`` in ``run_dir``.

    Raises:
        InputError: not a checkpoint name (:func:`check_checkpoint_name`).
        FileNotFoundError: the run has no such checkpoint (the message lists those it has).
    """
    path = Path(run_dir) / "checkpoints" / f"{check_checkpoint_name(name)}.pt"
    if not path.is_file():
        have = ", ".join(model_checkpoints(run_dir)) or "none"
        raise FileNotFoundError(f"{path}: checkpoint not found; {Path(run_dir)} has: {have}")
    return path


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
