"""Moved to :mod:`sidda.datasets`; this module only re-exports the names it used to hold."""

from sidda.datasets import (check_data, format_summary, import_image_folders,  # noqa: F401
                            resolve_data_config, sample_grid)

__all__ = ["check_data", "format_summary", "import_image_folders", "resolve_data_config",
           "sample_grid"]
