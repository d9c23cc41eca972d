"""Look at a data folder before training: :func:`resolve_data_config` works out its layout and
suffixes, :func:`check_data` validates it completely and summarises it, :func:`format_summary`
prints the summary (``sidda data check``); :func:`run_data_config` is how a trained run reads a
data folder again (evaluation, the report's galleries)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from sidda.datasets.layout import (
    DataConfig,
    check_class_names,
    detect_layout,
    layout_paths,
    load_domains,
    read_manifest,
    resolve_target_suffix,
    zenodo_suffixes,
)
from sidda.datasets.npyfiles import DataError, file_checksum, scan_images
from sidda.errors import short_repr

__all__ = ["DataSummary", "FileSummary", "check_data", "format_summary", "resolve_data_config",
           "run_data_config"]

_SOURCE_SUFFIXES = ("", "_sdss")  # source suffixes of the published sets, in order of preference


def resolve_data_config(
    path: str | Path,
    *,
    layout: str | None = None,
    source_suffix: str | None = None,
    target_suffix: str | None = None,
    **options: object,
) -> DataConfig:
    """A :class:`~sidda.datasets.DataConfig` for ``path``, filling in what is not given.

    The layout comes from the manifest or the files present. Zenodo suffixes come from the
    manifest, else from the ``train/x_train*.npy`` files: the source is the unsuffixed file (or
    ``_sdss``), the target the one other suffix.

    Raises:
        DataError: not a data folder, or the suffixes are ambiguous (pass them explicitly).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    manifest = read_manifest(root)
    layout = layout or manifest.get("layout") or detect_layout(root)
    if layout is None:
        raise DataError(
            f"{root}: not a data folder; expected train/x_train*.npy (zenodo layout) or "
            "source_X_train.npy (mrssc2 layout), see docs/data.md"
        )
    if layout == "zenodo":
        found = zenodo_suffixes(root)
        if source_suffix is None:
            source_suffix = manifest.get("source_suffix")
        if source_suffix is None:
            source_suffix = next((s for s in _SOURCE_SUFFIXES if s in found), None)
            if source_suffix is None:
                raise DataError(
                    f"{root}: cannot tell the source files among suffixes {found}; pass "
                    "--source-suffix"
                )
        if target_suffix is None:
            target_suffix = manifest.get("target_suffix")
        if target_suffix is None:
            others = [s for s in found if s != source_suffix]
            if len(others) != 1:
                raise DataError(
                    f"{root}: {'no' if not others else 'several'} target files besides the "
                    f"source ({source_suffix!r}) among suffixes {found}; pass --target-suffix"
                )
            target_suffix = others[0]
    extra = {k: v for k, v in (("source_suffix", source_suffix),
                               ("target_suffix", target_suffix)) if v is not None}
    return DataConfig(path=str(root), layout=layout, **extra, **options)  # type: ignore[arg-type]


@dataclass
class FileSummary:
    """One image file of a data folder, as :func:`check_data` saw it."""

    key: str  # train_s, train_t, test_s, test_t
    file: str  # relative to the folder
    n: int
    shape: tuple[int, ...]  # one image, as stored (H, W[, C])
    dtype: str
    min: float
    max: float
    mean: float
    counts: list[int] | None  # images per class, or None (unlabelled)
    memory_mapped: bool


@dataclass
class DataSummary:
    """What :func:`check_data` found: per-file facts, classes and warnings."""

    root: Path
    cfg: DataConfig
    files: list[FileSummary]
    num_classes: int
    class_names: list[str] | None
    model_shape: tuple[int, int, int]  # (C, H, W) the models see
    manifest: dict
    warnings: list[str] = field(default_factory=list)
    checksums_verified: int | None = None


def run_data_config(data: DataConfig, path: str | Path, *, own: bool,
                    target_suffix: str | None) -> DataConfig:
    """How a run trained with ``data`` (its config's section) reads the data folder ``path``.

    Without ``data.target_suffix``, the run's own folder (``own``) takes ``target_suffix``, the
    suffix the run recorded (``run.json``), whatever the folder's manifest says now; another
    folder takes the one its ``manifest.json`` records, or, when it has no manifest (test files
    copied on their own), the run's.
    """
    dcfg = replace(data, path=str(path))
    if dcfg.target_suffix is None and (own or not (Path(path) / "manifest.json").is_file()):
        dcfg = replace(dcfg, target_suffix=target_suffix)
    return dcfg


def check_data(cfg: DataConfig, *, verify: bool = False) -> DataSummary:
    """Validate a data folder completely and summarise it.

    Loads every split with :func:`~sidda.datasets.load_domains` (which raises
    :class:`~sidda.datasets.DataError` on any invalid file), then scans each image file chunk
    by chunk for its value range.

    Args:
        cfg: The folder and how it is read.
        verify: Also recompute the SHA-256 of every file listed in the manifest (slow for
            large files) and fail on a mismatch.
    """
    data = load_domains(cfg)
    root = Path(cfg.path)
    if cfg.layout == "zenodo" and cfg.target_suffix is None:
        cfg = replace(cfg, target_suffix=resolve_target_suffix(root))
    paths = layout_paths(root, layout=cfg.layout, source_suffix=cfg.source_suffix,
                         target_suffix=cfg.target_suffix)
    files = []
    for key, s in (("train_s", data.train_s), ("train_t", data.train_t),
                   ("test_s", data.test_s), ("test_t", data.test_t)):
        raw = np.load(paths[key][0], mmap_mode="r", allow_pickle=False)
        stats = scan_images(raw)
        counts = None if s.y is None else torch.bincount(
            s.y, minlength=data.num_classes).tolist()
        files.append(FileSummary(
            key=key, file=paths[key][0].relative_to(root).as_posix(), n=len(raw),
            shape=tuple(raw.shape[1:]), dtype=str(raw.dtype), min=stats.min, max=stats.max,
            mean=stats.mean, counts=counts, memory_mapped=s.memory_mapped,
        ))
    manifest = data.manifest
    summary = DataSummary(
        root=root, cfg=cfg, files=files, num_classes=data.num_classes,
        class_names=check_class_names(manifest.get("class_names"), data.num_classes,
                                      where=root / "manifest.json"),
        model_shape=data.train_s.shape, manifest=manifest,
    )
    _add_warnings(summary)
    if verify:
        summary.checksums_verified = _verify_checksums(root, manifest)
    return summary


def _add_warnings(summary: DataSummary) -> None:
    w = summary.warnings
    if summary.manifest.get("generator", "") is None and "sha256" not in summary.manifest:
        w.append("no manifest.json: add one with `sidda data check DIR --write-manifest`")
    for f in summary.files:
        if summary.cfg.normalize == "half" and (f.min < -0.01 or f.max > 1.01):
            w.append(f"{f.file}: values span [{f.min:.3g}, {f.max:.3g}], outside the [0, 1] "
                     "that normalize='half' assumes (expected for the paper's noisy shapes and "
                     "astro targets)")
        if f.counts is not None:
            empty = [k for k, c in enumerate(f.counts) if c == 0]
            if empty:
                w.append(f"{f.file}: no images of class(es) {empty}")
            elif max(f.counts) > 3 * min(f.counts):
                w.append(f"{f.file}: classes are imbalanced (largest {max(f.counts)}, smallest "
                         f"{min(f.counts)}); accuracy alone may flatter the majority class")


def _verify_checksums(root: Path, manifest: dict) -> int:
    """Recompute the checksums ``manifest["sha256"]`` lists; every path must lie inside
    ``root`` (relative, no ``..``), so a manifest cannot make sidda read other files."""
    sums = manifest.get("sha256") or {}
    where = root / "manifest.json"
    if not isinstance(sums, dict) or not sums:
        raise DataError(f"{where}: lists no checksums to verify (sha256 must map file names to "
                        "checksums)")
    inside = root.resolve()
    for rel, expected in sums.items():
        path = root / str(rel)
        if (not isinstance(rel, str) or not rel or Path(rel).is_absolute()
                or ".." in Path(rel).parts or not path.resolve().is_relative_to(inside)):
            raise DataError(f"{where}: sha256 lists {short_repr(rel)}, a path outside the data "
                            "folder; a manifest lists files inside its folder only (e.g. "
                            "train/x_train.npy)")
        if not path.is_file():
            raise DataError(f"{path}: listed in manifest.json but missing")
        if file_checksum(path) != expected:
            raise DataError(f"{path}: SHA-256 differs from manifest.json; the file changed or "
                            "is corrupt")
    return len(sums)


def format_summary(s: DataSummary) -> str:
    """A plain-text report of a :class:`DataSummary` (what ``sidda data check`` prints)."""
    cfg = s.cfg
    lines = [f"data folder {s.root}  layout {cfg.layout}"
             + (f"  source suffix {cfg.source_suffix!r}  target suffix {cfg.target_suffix!r}"
                if cfg.layout == "zenodo" else "")]
    m = s.manifest
    if m.get("generator") is not None:
        facts = ", ".join(f"{k} {m[k]}" for k in ("generator", "protocol", "shift", "seed")
                          if m.get(k) is not None)
        lines.append(f"manifest: {facts}")
    names = s.class_names or [str(k) for k in range(s.num_classes)]
    lines.append(f"classes: {s.num_classes} ({', '.join(names)})")
    c, h, w = s.model_shape
    lines.append(f"the model sees: {c} channel(s), {h}x{w} pixels"
                 + (f" (resized to data.image_size={cfg.image_size})" if cfg.image_size else ""))
    head = f"{'split':<6}{'domain':<8}{'file':<28}{'images':>8}  {'shape':<14}{'dtype':<9}" \
           f"{'min':>9}{'max':>9}{'mean':>9}  counts per class"
    lines += ["", head, "-" * len(head)]
    for f in s.files:
        split, dom = f.key.split("_")
        counts = "unlabelled" if f.counts is None else " ".join(map(str, f.counts))
        lines.append(
            f"{split:<6}{'source' if dom == 's' else 'target':<8}{f.file[-27:]:<28}{f.n:>8}  "
            f"{'x'.join(map(str, f.shape)):<14}{f.dtype:<9}{f.min:>9.3g}{f.max:>9.3g}"
            f"{f.mean:>9.3g}  {counts}" + ("  [memory-mapped]" if f.memory_mapped else "")
        )
    by = {f.key: f.n for f in s.files}
    lines.append("")
    lines.append(f"domain sizes: source {by['train_s']} train + {by['test_s']} test, target "
                 f"{by['train_t']} train + {by['test_t']} test")
    if s.checksums_verified is not None:
        lines.append(f"checksums: {s.checksums_verified} files match manifest.json")
    lines += [f"warning: {w}" for w in s.warnings]
    lines.append("ok: the folder is valid")
    return "\n".join(lines)
