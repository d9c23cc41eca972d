"""The demo: source-only against SIDDA (paper and robust variants) on a small simulated set.

:func:`run_demo` generates the data (clean source, Poisson-noise target; ``docs/demo.md`` says
why the astronomical objects are the default), trains the plain CNN once per entry of
:data:`DEMO_METHODS` with the same seed and schedule, and evaluates every run on both test sets.
``sidda demo`` prints the result.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from sidda.config import RunConfig
from sidda.errors import InputError
from sidda.experiments.data import write_generated
from sidda.experiments.evaluation import evaluate_run
from sidda.experiments.training import train_run
from sidda.generators import make_dataset
from sidda.train import Callback

__all__ = ["DEMO_METHODS", "DemoResult", "run_demo"]

logger = logging.getLogger(__name__)

#: The demo's runs: run-name suffix -> loss section. The first is the baseline.
DEMO_METHODS = {
    "source_only": {"method": "source_only"},
    "sidda_paper": {"method": "sidda", "variant": "paper"},
    "sidda_robust": {"method": "sidda", "variant": "robust"},
}


class DemoResult(NamedTuple):
    """What :func:`run_demo` made."""

    reports: dict[str, dict]  #: run name -> its ``metrics.json``, in :data:`DEMO_METHODS` order
    out: Path | None  #: the folder holding ``data/`` and ``runs/``; None when it was temporary
    seconds: float  #: wall-clock time of the whole demo

    def target_accuracy(self) -> list[float]:
        """Target test accuracy of each run, in :data:`DEMO_METHODS` order."""
        return [r["target"]["accuracy"] for r in self.reports.values()]


def run_demo(
    out: str | Path | None = None,
    *,
    dataset: str = "astro",
    model: str = "cnn",
    n_per_class: int = 600,
    image_size: int = 64,
    epochs: int = 24,
    warmup: int = 12,
    batch_size: int = 64,
    protocol: str = "clean",
    checkpoint: str = "final",
    seed: int = 0,
    argv: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
) -> DemoResult:
    """Generate the data, train and evaluate the :data:`DEMO_METHODS` runs.

    Args:
        out: Keep the data (``out/data``) and the runs (``out/runs``) here; it must not exist
            or be empty. None: a temporary folder, removed at the end.
        dataset: ``astro`` or ``shapes`` (:func:`~sidda.generators.make_dataset`).
        model: Model of every run.
        n_per_class: Base images per class and domain.
        image_size: Side of the images.
        epochs, warmup, batch_size, seed: The ``train`` section of every run.
        protocol: ``clean`` or ``paper`` (docs/data.md).
        checkpoint: The checkpoint evaluated.
        argv: Command line, recorded in each run.
        callbacks: Passed to training, for every run.

    Raises:
        FileExistsError: ``out`` exists and is not empty (before anything is written).
    """
    keep = out is not None
    root = Path(out) if keep else Path(tempfile.mkdtemp(prefix="sidda-demo-"))
    if keep and root.exists() and not root.is_dir():
        raise InputError(f"--out {root} is a file; give a folder for the demo's data and runs, "
                         "e.g. demo-out")
    if keep and root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; choose another --out")
    t0 = time.perf_counter()
    try:
        data_dir = root / "data"
        logger.info("generating %s: %d per class per domain (%s protocol)",
                    dataset, n_per_class, protocol)
        splits = make_dataset(dataset, n_per_class, protocol=protocol, random_state=seed,
                              image_size=image_size)
        write_generated(data_dir, splits, target_suffix="_noise")
        base = {
            "out_dir": str(root / "runs"),
            "data": {"path": str(data_dir)},
            "model": {"name": model},
            "train": {"epochs": epochs, "warmup": warmup, "seed": seed,
                      "batch_size": batch_size},
        }
        reports = {}
        for label, loss in DEMO_METHODS.items():
            name = f"{model.replace(':', '-')}_{label}"
            cfg = RunConfig.from_dict(base | {"name": name, "loss": loss})
            logger.info("training %s (%s) for %d epochs", model, label, epochs)
            run_dir = train_run(cfg, argv=argv, callbacks=callbacks)
            reports[run_dir.name] = evaluate_run(run_dir, checkpoint=checkpoint)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return DemoResult(reports, root if keep else None, time.perf_counter() - t0)
