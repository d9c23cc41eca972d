"""A new user's first day, end to end, from a folder outside the checkout.

An astronomer has FITS cutouts with one image HDU per band (g, r, z, as survey cutout
services write them): labelled simulations in class folders, and an unlabelled survey folder.
From the installed ``sidda`` command, with no file of this repository (no config, no script):
the import, then two commands, ``sidda train --data`` (a starter config sized to the data) and
``sidda report``, give a report whose first screen says what happened on the unlabelled survey
and whose galleries show its images per predicted class.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

fits = pytest.importorskip("astropy.io.fits")

CHECKOUT = Path(__file__).resolve().parents[1]
BANDS = ("G", "R", "Z")


def _cutout(path: Path, kind: int, rng: np.random.Generator, *, noise: float) -> None:
    """A 16x16 cutout, one HDU per band: a centred blob (0), a bar (1) or a ring (2)."""
    yy, xx = np.mgrid[:16, :16] - 7.5
    r = np.hypot(yy, xx)
    shape = [np.exp(-r**2 / 8), (np.abs(yy) < 2) * 1.0, ((r > 4) & (r < 6)) * 1.0][kind]
    hdus = [fits.PrimaryHDU()]
    for i, band in enumerate(BANDS):
        img = (shape * (1 + 0.5 * i) + rng.normal(0, noise, shape.shape)).astype(np.float32)
        hdus.append(fits.ImageHDU(img, name=band))
    fits.HDUList(hdus).writeto(path)


def _sidda(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("sidda")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    res = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, f"sidda {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.mark.slow
def test_fits_cutouts_to_a_report_in_two_commands_after_the_import(tmp_path):
    if not Path(sys.executable).with_name("sidda").is_file():
        pytest.skip("the sidda command is not installed beside this Python (pip install .)")
    home = tmp_path / "desk"
    assert CHECKOUT not in home.resolve().parents
    rng = np.random.default_rng(0)
    names = ("elliptical", "edge_on", "ring")
    for k, name in enumerate(names):
        (home / "sims" / name).mkdir(parents=True)
        for i in range(14):
            _cutout(home / "sims" / name / f"{i}.fits", k, rng, noise=0.05)
    (home / "survey").mkdir()
    for i in range(42):  # unlabelled: one flat folder
        _cutout(home / "survey" / f"obj{i:03d}.fits", i % 3, rng, noise=0.4)

    _sidda("data", "import-folder", "sims", "survey", "--out", "data", "--bands", "g,r,z",
           cwd=home)
    train = _sidda("train", "--data", "data", cwd=home)  # 1: no config file at all
    runs = [p for p in (home / "runs").iterdir() if (p / "checkpoints").is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    assert f"sidda report {run.relative_to(home)}" in train.stdout  # the next command, said
    _sidda("report", str(run.relative_to(home)), "--out", "report.html", cwd=home)  # 2

    page = (home / "report.html").read_text(encoding="utf-8")
    assert str(tmp_path) not in page  # paths relative to the report: it can be mailed
    overview = page[page.index("<h2 id='overview'>"):page.index("<h2 id='summary'>")]
    assert page.index("<h2") == page.index("<h2 id='overview'>")  # the first screen
    for name in names:  # predicted class fractions beside the source balance
        assert name in overview
    assert "collapse" in overview.lower()
    assert "Sinkhorn" in overview and "\u2605 default" in overview  # distance, validators
    assert len(re.findall(r"<img[^>]+alt='target test image ", page)) >= 3  # the galleries
