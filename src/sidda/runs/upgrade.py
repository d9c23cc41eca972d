"""``sidda runs upgrade``: rewrite a run's checkpoints in the format that loads without running
code.

Checkpoints hold tensors and plain data only (:mod:`sidda.runs.checkpoints`). An older sidda
wrote the NumPy random state of ``last.pt`` as an array, which only a full unpickling reads,
and a full unpickling of a file someone changed can run any code; such a file is refused
when it is loaded. :func:`upgrade_run` converts the checkpoints of a run you trust: it reads
each one allowing NumPy arrays and nothing else
(:func:`~sidda.runs.checkpoints.load_legacy_checkpoint`: even then, a file that names other
Python objects is refused), turns every array into a tensor and every NumPy scalar into a
Python number (:func:`~sidda.runs.checkpoints.plain_data`), and writes it back atomically
with its SHA-256. A file without the checksum header
gets one. Files already in the present format are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sidda.errors import InputError
from sidda.runs.checkpoints import checkpoint_status, load_legacy_checkpoint, save_checkpoint
from sidda.runs.lock import lock_run
from sidda.runs.rundir import RunDir, RunState

__all__ = ["Upgrade", "upgrade_run"]


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade_run` found or did in a run.

    Attributes:
        converted: Checkpoints rewritten from the older format (NumPy objects in them).
        tagged: Checkpoints without a checksum that got one.
        current: Checkpoints already in the present format, left as they are.
    """

    converted: tuple[Path, ...]
    tagged: tuple[Path, ...]
    current: tuple[Path, ...]


def _checkpoint_files(run_dir: Path) -> list[Path]:
    RunDir(run_dir).require(RunState.SETTING_UP)  # config.yaml, or the one message
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        raise InputError(f"{run_dir}: the run has no checkpoints/ folder: nothing to upgrade")
    return sorted(p for p in folder.glob("*.pt") if p.is_file())


def upgrade_run(run_dir: str | Path, *, trust: bool = False) -> Upgrade:
    """Rewrite the checkpoints of ``run_dir`` that an older sidda wrote (module docstring).

    Args:
        run_dir: The run directory.
        trust: You trust where the run came from. Without it nothing is written: the error
            lists the files that need converting.

    Raises:
        FileNotFoundError: ``run_dir`` holds no run (no config.yaml).
        InputError: no checkpoints; a checkpoint needs converting and ``trust`` is
            False; a checkpoint names Python objects that no sidda ever wrote (refused, even
            with ``trust``); a damaged checkpoint.
    """
    run_dir = Path(run_dir)
    files = _checkpoint_files(run_dir)
    tagged, current, legacy = [], [], []
    with lock_run(run_dir, what="runs upgrade"):
        for path in files:
            has_tag, old = checkpoint_status(path)  # refuses files naming other objects
            (legacy if old else current if has_tag else tagged).append(path)
        if (legacy or tagged) and not trust:
            names = ", ".join(p.name for p in legacy + tagged)
            raise InputError(
                f"{run_dir}: checkpoints/{{{names}}} were written by an older sidda; converting "
                "them reads NumPy arrays (and vouches for files without a checksum), which is "
                "safe only for a run you trust (you trained it, or it came from someone you "
                f"trust); nothing was changed. To convert: sidda runs upgrade {run_dir} --trust"
            )
        for path in legacy + tagged:
            ckpt, _ = load_legacy_checkpoint(path)
            save_checkpoint(path, ckpt)  # arrays become tensors; refuses anything else
    return Upgrade(converted=tuple(legacy), tagged=tuple(tagged), current=tuple(current))
