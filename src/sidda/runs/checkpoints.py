"""Model checkpoints: their names, and files that carry the SHA-256 of their bytes.

A checkpoint holds tensors and plain data only, and is read with
``torch.load(weights_only=True)``: loading one never runs code, whoever wrote it. A file that
names any other Python object is refused (:class:`UnsafeCheckpointError`); one written by an
older sidda (a NumPy random state in ``last.pt``) is converted by ``sidda runs upgrade RUN
--trust`` (:mod:`sidda.runs.upgrade`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import io
import logging
import pickle
import re
from pathlib import Path

import numpy as np
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
                     "a label-free rule (a validator's name: entropy, im, snd, iwv, ...)")


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
#: What a checkpoint written by an older sidda may name besides tensors and plain data: the
#: NumPy random state in ``last.pt`` (an array). Only :func:`load_legacy_checkpoint` accepts it.
LEGACY_GLOBALS = frozenset({
    "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
})


class UnsafeCheckpointError(InputError):
    """A checkpoint that names Python objects besides tensors and plain data: loading it could
    run code, so it is refused (nothing of it is executed).

    Attributes:
        path: The file.
        names: The objects it names (``module.name``).
        legacy: Only what an older sidda wrote (:data:`LEGACY_GLOBALS`):
            ``sidda runs upgrade RUN --trust`` converts it.
    """

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.names = path, sorted(names)
        self.legacy = set(names) <= LEGACY_GLOBALS
        listed = short_repr(", ".join(self.names)).strip("'")
        if self.legacy:
            run = path.parent.parent if path.parent.name == "checkpoints" else "RUN_DIR"
            text = (f"{path}: written by an older sidda in a format that can run code when it is "
                    f"loaded ({listed}), so it is refused; if you trust where this run came "
                    f"from, convert it with: sidda runs upgrade {run} --trust")
        else:
            text = (f"{path}: refused: it names Python code ({listed}) that a sidda checkpoint "
                    "never holds, and loading it could run that code; do not use checkpoints "
                    "from a source you do not trust (docs/recovery.md, \"What is safe to "
                    "open\")")
        super().__init__(text)


class DamagedCheckpointError(InputError):
    """A checkpoint that does not read: changed or cut after it was written, or not written by
    sidda. The message says to restore it or to train the run again.

    >>> str(DamagedCheckpointError(Path("r/final.pt"), "damaged checkpoint (cut)"))[:45]
    'r/final.pt: damaged checkpoint (cut); restore'

    Attributes:
        path: The file.
        reason: What is wrong with it, without the advice.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; restore it from a backup, or start the run again "
                         "(`sidda train --config ... --force`)")
        self.path, self.reason = path, reason


def _load_failure(e: BaseException) -> str:
    """What ``torch.load`` found wrong, without its advice about ``weights_only``.

    >>> _load_failure(RuntimeError("Invalid magic number; corrupt file?"))
    'Invalid magic number; corrupt file?'
    """
    text = str(e)
    if "WeightsUnpickler error:" in text:  # the cause follows torch's paragraph of advice
        text = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n", 1)[0]
    text = text.split(". This is an internal miniz error", 1)[0]
    return one_line(text, limit=200)


def plain_data(obj: object) -> object:
    """``obj`` with every NumPy array turned into a tensor (unsigned integers into int64) and
    every NumPy scalar into a Python number, through dicts, lists and tuples. Containers that
    hold none are returned as they are (a ``state_dict`` keeps its type and ``_metadata``).

    >>> plain_data({"key": np.arange(3, dtype=np.uint32), "pos": np.int64(2)})
    {'key': tensor([0, 1, 2]), 'pos': 2}
    """
    if isinstance(obj, np.ndarray):
        arr = obj.astype(np.int64) if obj.dtype.kind == "u" else obj
        return torch.from_numpy(np.ascontiguousarray(arr))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = {k: plain_data(v) for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        out = copy.copy(obj)  # the same mapping type, with its attributes
        out.update(items)
        return out
    if type(obj) in (list, tuple):
        values = [plain_data(v) for v in obj]
        if all(a is b for a, b in zip(values, obj, strict=True)):
            return obj
        return type(obj)(values)
    return obj


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Atomically save a checkpoint dict with ``torch.save``, behind a SHA-256 of its bytes.

    The file is :data:`CHECKPOINT_MAGIC`, the 32-byte SHA-256 digest of the ``torch.save``
    bytes, then those bytes: :func:`load_checkpoint` refuses a file whose bytes changed after
    they were written (a flipped bit, a partial copy). Refuses to save non-finite weights: a
    checkpoint is only ever a usable model. The payload must be tensors and plain data (dicts,
    lists, tuples, strings, numbers, None), what :func:`load_checkpoint` reads back without
    running code; NumPy arrays and scalars are turned into tensors and numbers
    (:func:`plain_data`), anything else is refused.
    """
    for key in ("model", "loss"):
        for name, t in (payload.get(key) or {}).items():
            if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"refusing to save {path}: {key}.{name} holds NaN or inf")
    buf = io.BytesIO()
    torch.save(plain_data(payload), buf)
    body = buf.getvalue()
    unsafe = _unsafe_names(body)
    if unsafe:  # a bug: sidda would refuse to load what it wrote
        raise ValueError(f"refusing to save {path}: it would name {', '.join(unsafe)}; "
                         "checkpoints hold tensors and plain data only")
    return atomic_write(path, CHECKPOINT_MAGIC + hashlib.sha256(body).digest() + body)


def _unsafe_names(body: bytes) -> list[str]:
    """The objects that the pickle in ``body`` names beyond what ``weights_only`` loads
    (read from its opcodes: nothing is executed)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(body)))
    except Exception:  # noqa: BLE001 - damaged: torch.load reports it
        return []


def _read_body(path: Path) -> tuple[bytes, bool]:
    """The ``torch.save`` bytes of the checkpoint at ``path``, after checking its SHA-256, and
    whether it had one."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    head = raw[: len(CHECKPOINT_MAGIC)]
    if len(head) == len(CHECKPOINT_MAGIC) and 0 < sum(
            a != b for a, b in zip(head, CHECKPOINT_MAGIC, strict=True)) <= 2:
        raise DamagedCheckpointError(path, "damaged checkpoint (its header was changed after "
                                           "it was written)")
    if not raw.startswith(CHECKPOINT_MAGIC):
        return raw, False
    start = len(CHECKPOINT_MAGIC)
    digest, body = raw[start : start + _DIGEST_BYTES], raw[start + _DIGEST_BYTES :]
    if hashlib.sha256(body).digest() != digest:
        raise DamagedCheckpointError(path, "damaged checkpoint (its SHA-256 does not match the "
                                           "one written with it: it was changed or cut after "
                                           "it was written)")
    return body, True


def _legacy_globals() -> list:
    """:data:`LEGACY_GLOBALS` as the objects of the installed NumPy, under each name, and the
    class of the uint32 dtype (whose state the pickle sets)."""
    core = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core")
                                   else "numpy.core.multiarray")
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            (core._reconstruct, "numpy.core.multiarray._reconstruct"),
            (core._reconstruct, "numpy._core.multiarray._reconstruct")]


def _unpickle(path: Path, body: bytes, *, map_location: str | torch.device,
              legacy: bool) -> dict:
    allowed = _legacy_globals() if legacy else []
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError,
            MemoryError) as e:  # a damaged length field can ask for any size
        unsafe = [n for n in _unsafe_names(body) if not (legacy and n in LEGACY_GLOBALS)]
        if unsafe:
            raise UnsafeCheckpointError(path, unsafe) from None
        raise DamagedCheckpointError(path, f"not a readable checkpoint ({_load_failure(e)}: "
                                           "it was not written by sidda, or it was damaged "
                                           "after it was written)") from None
    if not isinstance(ckpt, dict):
        raise DamagedCheckpointError(path, f"not a sidda checkpoint (it holds a "
                                           f"{type(ckpt).__name__})")
    return ckpt


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, after checking its SHA-256.

    The file is read as tensors and plain data only (``torch.load(weights_only=True)``):
    loading never runs code, whoever wrote the file. A file without the checksum header
    (written by an older sidda) is loaded with a warning.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the file names Python objects beyond tensors and plain data
            (crafted, or written by an older sidda: the message says which, and how to
            convert a trusted one).
        DamagedCheckpointError: the file is damaged (checksum mismatch, truncated) or not a
            checkpoint.
    """
    path = Path(path)
    body, tagged = _read_body(path)
    ckpt = _unpickle(path, body, map_location=map_location, legacy=False)
    if not tagged:
        logger.warning("%s has no checksum (written by an older sidda); it cannot be checked "
                       "for damage", path)
    return ckpt


def checkpoint_status(path: str | Path) -> tuple[bool, bool]:
    """Whether the checkpoint at ``path`` has a checksum, and whether an older sidda wrote it
    with NumPy objects in it; read from its bytes, without loading it.

    Raises:
        UnsafeCheckpointError: it names other Python objects.
        DamagedCheckpointError: it is damaged (checksum mismatch).
    """
    path = Path(path)
    body, tagged = _read_body(path)
    names = _unsafe_names(body)
    if set(names) - LEGACY_GLOBALS:
        raise UnsafeCheckpointError(path, names)
    return tagged, bool(names)


def load_legacy_checkpoint(path: str | Path) -> tuple[dict, bool]:
    """Load a checkpoint that an older sidda wrote, for ``sidda runs upgrade --trust``.

    As :func:`load_checkpoint`, and NumPy arrays (:data:`LEGACY_GLOBALS`) are allowed too; any
    other object is still refused. Call it only for a run you trust.

    Returns:
        The checkpoint dict (NumPy arrays included) and whether the file had a checksum.
    """
    path = Path(path)
    body, tagged = _read_body(path)
    return _unpickle(path, body, map_location="cpu", legacy=True), tagged
