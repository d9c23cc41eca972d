"""Image sets on disk and in memory, and the batches that training reads from them.

- :mod:`~sidda.datasets.layout`: the on-disk layouts (zenodo, mrssc2), :class:`DataConfig`,
  :func:`load_domains`, :func:`write_layout`, ``manifest.json``;
- :mod:`~sidda.datasets.imageset`: :class:`ImageSet`, :class:`MappedImages`,
  :class:`DomainData`, the npy -> tensor conversion, :func:`split_indices`;
- :mod:`~sidda.datasets.normalize`: :func:`normalize_bands`, the per-image, per-band
  normalisations of ``DataConfig.normalize``;
- :mod:`~sidda.datasets.npyfiles`: :class:`DataError`, checked ``.npy`` reading,
  :func:`scan_images`, :func:`file_checksum`;
- :mod:`~sidda.datasets.sampling`: :func:`batches`, :func:`cycle_batches`;
- :mod:`~sidda.datasets.folders`: :func:`import_image_folders` (your own images);
- :mod:`~sidda.datasets.imagefiles`: :func:`read_image_file`, :func:`list_image_files`,
  :func:`import_settings` (one image file as the import reads it);
- :mod:`~sidda.datasets.fits`: FITS cutouts, and the HDUs stacked as bands;
- :mod:`~sidda.datasets.check`: :func:`resolve_data_config`, :func:`check_data`,
  :func:`format_summary`;
- :mod:`~sidda.datasets.normcheck`: :func:`normalisation_report`,
  :func:`check_normalisation` (the images after ``data.normalize``, per domain and band);
- :mod:`~sidda.datasets.preview`: :func:`to_rgb` (bands to colour, stretches), which
  :func:`sidda.plots.sample_grid` draws with.

See docs/data.md for the layouts and what each option does.
"""

from sidda.datasets.check import (
    DataSummary,
    FileSummary,
    check_data,
    format_summary,
    resolve_data_config,
)
from sidda.datasets.fits import FITS_EXTENSIONS
from sidda.datasets.folders import import_image_folders
from sidda.datasets.imagefiles import (
    IMAGE_EXTENSIONS,
    ImportSettings,
    import_settings,
    list_image_files,
    read_image_file,
)
from sidda.datasets.imageset import (
    MAX_IMAGE_SIZE,
    DomainData,
    ImageSet,
    MappedImages,
    load_split,
    split_indices,
)
from sidda.datasets.layout import (
    DEFAULT_TARGET_SUFFIX,
    LAYOUTS,
    DataConfig,
    check_class_names,
    detect_layout,
    layout_paths,
    load_domains,
    resolve_target_suffix,
    write_layout,
    write_manifest,
    zenodo_suffixes,
)
from sidda.datasets.normalize import NORMALIZATIONS, normalize_bands
from sidda.datasets.normcheck import (
    BandStats,
    NormalisationReport,
    check_normalisation,
    format_normalisation,
    normalisation_report,
)
from sidda.datasets.npyfiles import DataError, ImageStats, file_checksum, scan_images
from sidda.datasets.preview import STRETCHES, to_rgb
from sidda.datasets.sampling import batches, cycle_batches

__all__ = [
    "DEFAULT_TARGET_SUFFIX",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "MAX_IMAGE_SIZE",
    "NORMALIZATIONS",
    "FITS_EXTENSIONS",
    "STRETCHES",
    "BandStats",
    "DataConfig",
    "DataError",
    "DataSummary",
    "DomainData",
    "FileSummary",
    "ImageSet",
    "ImageStats",
    "ImportSettings",
    "MappedImages",
    "NormalisationReport",
    "batches",
    "check_class_names",
    "check_data",
    "check_normalisation",
    "cycle_batches",
    "detect_layout",
    "file_checksum",
    "format_normalisation",
    "format_summary",
    "import_image_folders",
    "import_settings",
    "list_image_files",
    "normalisation_report",
    "read_image_file",
    "layout_paths",
    "load_domains",
    "load_split",
    "normalize_bands",
    "resolve_data_config",
    "resolve_target_suffix",
    "scan_images",
    "split_indices",
    "to_rgb",
    "write_layout",
    "write_manifest",
    "zenodo_suffixes",
]
