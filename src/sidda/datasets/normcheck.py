"""The images as the model will see them: statistics per domain and band after
``data.normalize`` (``sidda data check DIR --normalize MODE``), and warnings where the two
domains will differ by construction.

:func:`normalisation_report` normalises the training images of each domain with
:func:`~sidda.datasets.normalize_bands` and reports, per band: mean, std, min and max of the
normalised pixels, the fraction of pixels whose band scale sat at the float floor
:math:`\\epsilon_c` (a constant band: ``per_band_*`` map it to 0, ``asinh`` to a constant), and,
under ``asinh``, the fraction whose band had a MAD of 0 and was scaled by its std instead (a
noise-free or mostly constant image). :func:`check_normalisation` reads a data folder's
training files for it (at most ``max_images`` random images per domain, at their stored
resolution: normalisation happens before ``data.image_size`` resizes).

Warning rules, each per band c (s: source, t: target):

- **spread**: :math:`\\max(\\sigma_s, \\sigma_t) > 10 \\min(\\sigma_s, \\sigma_t)`, where
  :math:`\\sigma` is the std of the normalised pixels (e.g. fluxes 100x apart under ``half``,
  which keeps the units: the model sees different ranges);
- **fallback** (``asinh``): the fractions of pixels scaled by the std (MAD 0) differ by at least
  0.5 (e.g. a noise-free source against a noisy target: the target is stretched by its noise,
  the source by its overall spread, so the same object looks different);
- **floor**: the fractions of pixels at the float floor differ by at least 0.1 (constant bands
  in one domain only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from sidda.datasets.imageset import open_images
from sidda.datasets.layout import DataConfig, layout_paths
from sidda.datasets.normalize import NORMALIZATIONS, normalize_bands, scale_flags
from sidda.datasets.npyfiles import DataError, nonfinite_error
from sidda.errors import InputError

__all__ = ["BandStats", "NormalisationReport", "check_normalisation", "format_normalisation",
           "normalisation_report"]

SPREAD_RATIO = 10.0
FALLBACK_GAP = 0.5
FLOOR_GAP = 0.1
_CHUNK = 256  # images normalised at once


class BandStats(NamedTuple):
    """One band of one domain after normalisation."""

    domain: str  # "source" or "target"
    band: int
    mean: float
    std: float
    min: float
    max: float
    floored: float  # fraction of pixels whose band scale is at the float floor
    fallback: float  # asinh: fraction of pixels whose band had MAD 0 (scaled by its std)


@dataclass
class NormalisationReport:
    """What :func:`normalisation_report` found: one row per domain and band, and warnings."""

    mode: str
    n_images: dict[str, int]  # images summarised per domain
    table: list[BandStats]
    warnings: list[str] = field(default_factory=list)


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x, dtype=np.float32))


def _band_stats(x: Tensor | np.ndarray, mode: str, domain: str) -> list[BandStats]:
    """Per band stats of images (N, C, H, W), accumulated in float64 chunk by chunk."""
    c = x.shape[1]
    total, square = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    lo, hi = torch.full((c,), np.inf, dtype=torch.float64), torch.full((c,), -np.inf,
                                                                        dtype=torch.float64)
    floored, fallback = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    n = 0
    for i in range(0, len(x), _CHUNK):
        raw = _as_tensor(x[i : i + _CHUNK]).float()  # (B, C, H, W)
        t = normalize_bands(raw, mode).double()
        total += t.sum((0, 2, 3))
        square += (t * t).sum((0, 2, 3))
        lo = torch.minimum(lo, t.amin((0, 2, 3)))
        hi = torch.maximum(hi, t.amax((0, 2, 3)))
        at_floor, by_std = scale_flags(raw, mode)  # (B, C)
        floored += at_floor.double().sum(0)
        fallback += by_std.double().sum(0)
        n += len(raw)
    pixels = n * x.shape[2] * x.shape[3]
    mean = total / pixels
    std = (square / pixels - mean * mean).clamp_min(0).sqrt()
    return [BandStats(domain, b, float(mean[b]), float(std[b]), float(lo[b]), float(hi[b]),
                      float(floored[b] / n), float(fallback[b] / n)) for b in range(c)]


def _warnings(mode: str, rows_s: list[BandStats], rows_t: list[BandStats]) -> list[str]:
    out = []
    for s, t in zip(rows_s, rows_t, strict=True):
        band = f"band {s.band}"
        small, big = sorted((s.std, t.std))
        if big > SPREAD_RATIO * small:
            ratio = "infinitely" if small == 0 else f"{big / small:.0f}x"
            out.append(f"{band}: under normalize={mode} the source pixels spread {s.std:.3g} "
                       f"(std) and the target ones {t.std:.3g}, {ratio} apart: the model sees "
                       "different ranges in the two domains (a per-image mode such as "
                       "per_band_standard or asinh removes a difference of units)")
        if mode == "asinh" and abs(s.fallback - t.fallback) >= FALLBACK_GAP:
            out.append(f"{band}: asinh scales {s.fallback:.0%} of the source images and "
                       f"{t.fallback:.0%} of the target ones by their std, because their MAD "
                       "is 0 (noise-free or mostly constant pixels), the others by their noise "
                       "(MAD): the two domains are stretched differently by construction "
                       "(per_band_standard treats them alike)")
        if abs(s.floored - t.floored) >= FLOOR_GAP:
            out.append(f"{band}: {s.floored:.0%} of the source images and {t.floored:.0%} of "
                       f"the target ones are constant in this band (scale at the float floor), "
                       f"which normalize={mode} maps to a constant")
    return out


def normalisation_report(x_s: Tensor | np.ndarray, x_t: Tensor | np.ndarray, *, mode: str
                         ) -> NormalisationReport:
    """Statistics of source and target images after ``mode``, and the module's warnings.

    Args:
        x_s, x_t: Raw images (N, C, H, W) of each domain (arrays or tensors, any float or
            integer dtype), as stored: the function normalises them.
        mode: One of :data:`~sidda.datasets.NORMALIZATIONS`.

    Raises:
        InputError: an unknown mode, or domains with different band counts.
    """
    if mode not in NORMALIZATIONS:
        raise InputError(f"unknown normalisation {mode!r}; valid values are "
                         f"{', '.join(NORMALIZATIONS)}")
    if x_s.ndim != 4 or x_t.ndim != 4 or x_s.shape[1] != x_t.shape[1] or not len(x_s) \
            or not len(x_t):
        raise InputError(f"normalisation_report takes two non-empty image sets (N, C, H, W) "
                         f"with the same bands, got {tuple(x_s.shape)} and {tuple(x_t.shape)}")
    rows_s = _band_stats(x_s, mode, "source")
    rows_t = _band_stats(x_t, mode, "target")
    return NormalisationReport(mode, {"source": len(x_s), "target": len(x_t)}, rows_s + rows_t,
                               _warnings(mode, rows_s, rows_t))


def check_normalisation(cfg: DataConfig, *, mode: str | None = None, max_images: int = 1000,
                        random_state: int = 0) -> NormalisationReport:
    """:func:`normalisation_report` of a data folder's training images.

    Args:
        cfg: The folder and how it is read (``cfg.normalize`` is the mode unless ``mode``).
        mode: The normalisation to report on; None takes ``cfg.normalize``.
        max_images: At most this many images per domain, drawn at random (seeded); the files
            stay memory-mapped, so only those images are read.
        random_state: Seed of that draw.

    Call it on a folder that :func:`~sidda.datasets.load_domains` (or ``check_data``) has
    accepted: it reads the drawn images only, and checks just that they are finite.

    Raises:
        DataError: a training file that cannot be read, or a drawn image that is not finite.
    """
    mode = cfg.normalize if mode is None else mode
    if max_images < 1:
        raise InputError(f"max_images must be >= 1, got {max_images}")
    paths = layout_paths(cfg.path, layout=cfg.layout, source_suffix=cfg.source_suffix,
                         target_suffix=cfg.target_suffix)
    rng = np.random.default_rng(random_state)
    sets = []
    for key in ("train_s", "train_t"):
        path = paths[key][0]
        stored = open_images(path, cfg.channels_first)  # memory-mapped, as stored
        if stored.ndim != 4 or not len(stored) or stored.dtype.kind not in "iuf":
            raise DataError(f"{path}: not an image file that training reads; run `sidda data "
                            "check` on the folder for the problem")
        rows = np.sort(rng.choice(len(stored), min(len(stored), max_images), replace=False))
        with np.errstate(over="ignore"):
            x = torch.from_numpy(np.asarray(stored[rows], dtype=np.float32))  # (n, C, H, W)
        finite = torch.isfinite(x).flatten(1).all(1)
        if not finite.all():
            raise nonfinite_error(path, int(rows[int((~finite).nonzero()[0])]))
        sets.append(x)
    return normalisation_report(sets[0], sets[1], mode=mode)


def format_normalisation(report: NormalisationReport) -> str:
    """The report as the text ``sidda data check --normalize`` prints."""
    n = report.n_images
    head = (f"{'domain':<8}{'band':>5}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}"
            f"{'floor':>8}" + (f"{'by std':>8}" if report.mode == "asinh" else ""))
    lines = [f"after normalize={report.mode} (training images: {n['source']} source, "
             f"{n['target']} target)", head, "-" * len(head)]
    for r in report.table:
        lines.append(f"{r.domain:<8}{r.band:>5}{r.mean:>10.3g}{r.std:>10.3g}{r.min:>10.3g}"
                     f"{r.max:>10.3g}{r.floored:>8.1%}"
                     + (f"{r.fallback:>8.1%}" if report.mode == "asinh" else ""))
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)
