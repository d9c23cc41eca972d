"""One self-contained HTML page about one or several evaluated runs, fit to be mailed.

:func:`write_report` reads each run directory through :class:`~sidda.runs.RunDir` (its config,
data manifest, metrics, prediction arrays and history) and writes one HTML file. It renders
only: the runs are evaluated first (:func:`sidda.experiments.evaluate_runs`, as ``sidda report``
does), and a run without a complete evaluation is an error. Every figure and thumbnail is a
base64-embedded PNG, every piece of text is HTML-escaped (a run name like ``<b>`` shows as
text), and every path is relative to the page's folder, so the page needs no other file and
tells nothing of the machine that wrote it.

Sections, in order:

* what happened on the target, without target labels (:mod:`~sidda.report.overview`):
  predicted class shares beside the source's, the collapse flag, the domain distance, the
  label-free validators, mean confidence and entropy;
* summary table; calibration (standard, temperature-scaled, paper-compatible); label-free
  checkpoint selection; latent space (Isomap, the paper's Figure 4)
  (:mod:`~sidda.report.sections`);
* training curves, every run on shared axes, x in epochs (:mod:`~sidda.report.curves`);
* per run: facts, a gallery of the most and least confident target test images per predicted
  class (:mod:`~sidda.report.gallery`), reliability diagrams, confusion matrices,
  classification reports, the config and the data manifest.
"""

from sidda.report.markup import figure_to_data_uri
from sidda.report.page import ISOMAP_POINTS, build_report, check_isomap_points, write_report

__all__ = ["ISOMAP_POINTS", "build_report", "check_isomap_points",
           "figure_to_data_uri", "write_report"]
