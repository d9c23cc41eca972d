r"""Galleries: for each predicted class, the target test images the run is most and least sure of.

Confidence is the network's softmax maximum :math:`c_i = \max_k p_{ik}` from the evaluation's
``probs_target.npy``, and the predicted class :math:`\hat y_i = \arg\max_k p_{ik}`. For each
class k, :func:`pick_gallery` takes the (up to) :data:`PER_SIDE` images of class k with the
highest :math:`c_i` (highest first) and, among the others, those with the lowest (lowest
first); ties go to the earlier image. A class the run never predicts shows none.

The images are the target test images of the run's data folder as stored (no normalisation),
in file order, which is the row order of ``probs_target.npy``; the report checks that the
counts agree. Colour as ``sidda data show`` draws it (:func:`sidda.datasets.to_rgb`,
:func:`~sidda.datasets.preview.colour_for`): FITS imports with three or more bands as
z -> R, r -> G, g -> B (``rgb=(2, 1, 0)``), other data by ``to_rgb``'s default, unless ``rgb``
is given; the stretch limits come from all the images of
one run's gallery together, so brightness differences between thumbnails are real. Each image
is shrunk by an integer block mean to at most :data:`THUMB_PIXELS` pixels a side and embedded
as a PNG; a page of many runs shows fewer images per class (:func:`per_side_for`), so that it
holds at most :data:`MAX_THUMBNAILS`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from sidda.config import RunConfig
from sidda.datasets import DataError, load_domains, to_rgb
from sidda.datasets.check import run_data_config
from sidda.datasets.preview import colour_for
from sidda.errors import InputError
from sidda.report.loading import ReportRun
from sidda.report.markup import esc, png_data_uri, relative_path

__all__ = ["MAX_THUMBNAILS", "PER_SIDE", "THUMB_PIXELS", "GalleryPick", "gallery_html",
           "per_side_for", "pick_gallery", "thumbnail"]

#: Images per predicted class on each side (most confident, least confident).
PER_SIDE = 6
#: Largest side of a thumbnail, in pixels.
THUMB_PIXELS = 64
#: Most thumbnails on one page (a 64-pixel colour PNG of a noisy image takes about 10 kB).
MAX_THUMBNAILS = 480


class GalleryPick(NamedTuple):
    """The images of one predicted class in a gallery."""

    most: np.ndarray  #: (<= PER_SIDE,) indices, highest confidence first
    least: np.ndarray  #: (<= PER_SIDE,) indices, lowest confidence first, none in ``most``
    count: int  #: target images predicted as this class


def pick_gallery(probs: np.ndarray, *, per_side: int = PER_SIDE) -> list[GalleryPick]:
    """Per class (K of them), the most and least confident images predicted as it.

    >>> p = np.array([[.9, .1], [.6, .4], [.2, .8], [.7, .3]])
    >>> [(g.most.tolist(), g.least.tolist(), g.count) for g in pick_gallery(p, per_side=1)]
    [([0], [1], 3), ([2], [], 1)]
    """
    probs = np.asarray(probs, dtype=np.float64)  # (N, K)
    pred, conf = probs.argmax(1), probs.max(1)  # (N,), (N,)
    out = []
    for k in range(probs.shape[1]):
        idx = np.flatnonzero(pred == k)  # ascending: ties keep the earlier image first
        by_conf = idx[np.argsort(-conf[idx], kind="stable")]
        most = by_conf[:per_side]
        rest = idx[~np.isin(idx, most)]
        least = rest[np.argsort(conf[rest], kind="stable")][:per_side]
        out.append(GalleryPick(most, least, len(idx)))
    return out


def per_side_for(num_classes: Sequence[int]) -> int:
    """Images per side and class, :data:`PER_SIDE` unless a page of runs with these class
    counts would then hold more than :data:`MAX_THUMBNAILS` (at least 1).

    >>> per_side_for([3, 3]), per_side_for([10] * 30)
    (6, 1)
    """
    slots = 2 * sum(num_classes)
    return max(1, min(PER_SIDE, MAX_THUMBNAILS // max(1, slots)))


def thumbnail(rgb: np.ndarray, *, max_pixels: int = THUMB_PIXELS) -> np.ndarray:
    """An (H, W, 3) uint8 image shrunk by an integer block mean to at most ``max_pixels`` a side.

    >>> im = (2 * np.arange(48, dtype=np.uint8)).reshape(4, 4, 3)  # 4x4 -> 2x2: 2x2 blocks
    >>> thumbnail(im, max_pixels=2)[0, 0].tolist()  # mean of pixels (0,0), (0,1), (1,0), (1,1)
    [15, 17, 19]
    """
    h, w = rgb.shape[:2]
    f = max(1, math.ceil(max(h, w) / max_pixels))
    if f == 1:
        return rgb
    h2, w2 = h // f, w // f
    blocks = rgb[: h2 * f, : w2 * f].reshape(h2, f, w2, f, 3).astype(np.float64)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


class _Images(NamedTuple):
    x: object  #: (N, C, H, W) images as stored, indexable with an int64 tensor
    manifest: dict
    files: list[str] | None  #: file of each image as imported (index.csv), or None


def _target_test_images(run: ReportRun) -> _Images:
    """The run's target test images, as stored, from the folder its evaluation read: the run's
    own (the evaluation in the run directory), read as evaluation reads it
    (:func:`~sidda.datasets.check.run_data_config`); may raise DataError, ValueError,
    TypeError."""
    cfg = RunConfig.from_dict(run.config_dict or {})
    dcfg = replace(run_data_config(cfg.data, run.data_path, own=True,
                                   target_suffix=run.info.target_suffix),
                   normalize="none", memory_budget_mb=0)
    loaded = load_domains(dcfg, splits=("test",))
    return _Images(loaded.test_t.x, loaded.manifest or run.manifest,
                   _index_files(Path(dcfg.path), len(loaded.test_t)))


def _index_files(root: Path, n: int) -> list[str] | None:
    """The imported file of each target test image (``index.csv`` of an import), or None."""
    path = root / "index.csv"
    if not path.is_file():
        return None
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f)
                    if r.get("domain") == "target" and r.get("split") == "test"]
        files = {int(r["index"]): str(r["file"]) for r in rows}
    except (OSError, ValueError, KeyError, TypeError, csv.Error):
        return None
    return [files[i] for i in range(n)] if sorted(files) == list(range(n)) else None


def gallery_html(run: ReportRun, *, base: Path, rgb: Sequence[int] | None = None,
                 stretch: str = "linear", per_side: int = PER_SIDE) -> str:
    """The gallery of one run (module docstring), or a note saying why there is none."""
    head = "<h3>Target test images by predicted class</h3>"
    probs = run.array("probs", "target")  # (N, K)
    if probs is None or not len(probs):
        return head + "<p class='note'>No target test predictions in this evaluation.</p>"
    where = esc(relative_path(run.data_path, base))
    try:
        images = _target_test_images(run)
    except (DataError, ValueError, TypeError, OSError) as e:
        reason = str(e).replace(str(run.data_path), relative_path(run.data_path, base))
        return head + (f"<p class='note'>Not drawn: the target test images of {where} could "
                       f"not be read ({esc(reason)}).</p>")
    if len(images.x) != len(probs):
        return head + (f"<p class='note'>Not drawn: {where} holds {len(images.x)} target test "
                       f"images but the evaluation has {len(probs)}; the data changed since. "
                       "Re-evaluate with sidda evaluate.</p>")
    bands = colour_for(images.manifest, int(images.x.shape[1]), rgb)
    picks = pick_gallery(probs, per_side=per_side)
    shown = np.array([i for g in picks for i in (*g.most, *g.least)], dtype=np.int64)
    if not len(shown):
        return head
    try:
        rgb8 = to_rgb(images.x[torch.from_numpy(shown)], rgb=bands, stretch=stretch)
    except InputError as e:  # a band --rgb names that the images lack, a bad --stretch
        raise InputError(f"run {run.label}: {e}") from None
    thumbs = {int(i): png_data_uri(thumbnail(im)) for i, im in zip(shown, rgb8, strict=True)}
    names = list(run.class_names or [])
    if len(names) != probs.shape[1]:
        names = [str(k) for k in range(probs.shape[1])]
    conf = probs.max(1)

    def cell(idx: np.ndarray, k: int) -> str:
        out = []
        for i in idx:
            what = f"target test image {i}, predicted {names[k]}, confidence {conf[i]:.3f}"
            if images.files is not None:
                what += f", file {images.files[i]}"
            out.append(f"<span class='thumb'><img src='{thumbs[int(i)]}' alt='{esc(what)}' "
                       f"title='{esc(what)}'>{conf[i]:.2f}<br>#{i}</span>")
        return "".join(out) or "&ndash;"

    colour = ("grey" if bands is not None and len(bands) == 1 else
              f"bands {','.join(map(str, bands))} as R,G,B" if bands else "default colour")
    rows = "".join(
        f"<tr><td class='l'>{esc(names[k])}</td><td>{g.count} ({g.count / len(probs):.0%})</td>"
        + (f"<td class='l'>{cell(g.most, k)}</td><td class='l'>{cell(g.least, k)}</td></tr>"
           if g.count else "<td class='na' colspan='2'>never predicted</td></tr>")
        for k, g in enumerate(picks))
    return (head + f"<p class='note'>{len(probs)} target test images of {where}, as stored; "
            f"{esc(colour)}, {esc(stretch)} stretch with limits from the images shown. Under "
            "each image: the confidence (softmax maximum) and its row in the test file"
            + (" (hover for the imported file)" if images.files is not None else "")
            + ". Images the run is least sure of show where classes get confused.</p>"
            "<table class='gallery'><thead><tr><th class='l'>predicted class</th>"
            f"<th>images</th><th class='l'>most confident (up to {per_side})</th>"
            f"<th class='l'>least confident (up to {per_side})</th></tr></thead><tbody>"
            + rows + "</tbody></table>")
