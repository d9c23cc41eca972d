"""Comparisons: methods x seeds x data sets with one base config and one model.

:func:`run_compare` trains and evaluates every combination into
``OUT/runs/<data>/<method>_seed<k>`` (``sidda:robust`` becomes the folder ``sidda-robust``)
and then writes, into ``OUT``:

* ``compare_plan.json`` - the data sets, methods, seeds, model and base config (written first);
* ``compare.csv`` - one row per (data set, method, seed): accuracy, ECE, Brier, NLL per domain,
  the collapse flag, the domain distances and every label-free validator's score;
* ``compare_summary.csv`` / ``compare.json`` - per (data set, method): mean and sample standard
  deviation (ddof 1) over seeds of the :data:`COMPARE_METRICS` and of the label-free validator,
  the per-seed target accuracies and collapse flags; ``compare.json`` also holds, per data set,
  the ranking by the validator (no target labels) or each validator's agreement with target
  accuracy (:mod:`sidda.evaluate.standings`);
* ``compare_agreement.csv`` - that agreement, one row per (data set, validator);
* ``compare.md`` - one markdown table per data set (rows: methods), the method best on target
  and, when ``source_only`` is compared, the share of the domain gap each method closes,
  ``(acc_t(method) - acc_t(source_only)) / (acc_s(source_only) - acc_t(source_only))``; below
  it the label-free ranking (collapsed runs after healthy ones) or the agreement table;
* ``compare.txt`` - the same tables as plain text;
* ``report.html`` - the HTML report of every run with the comparison (tables and a bar chart
  of target accuracy per method) on top.

A method token is ``METHOD`` or ``METHOD:VARIANT`` (only sidda has variants: ``sidda:paper``,
``sidda:robust``; a plain ``sidda`` is the default variant, ``robust``). Each run's ``loss``
section is the method (and variant) plus the base config's options of that method that differ
from the base method's defaults (:func:`sidda.methods.config.method_loss`). Every run config is
validated before anything is trained, and finished runs are reused
(:func:`sidda.experiments.reuse.ensure_run`), so an interrupted comparison continues where it
stopped when it
is run again.
"""

from sidda.compare.plan import MethodSpec, parse_data, parse_method
from sidda.compare.run import CompareResult, run_compare
from sidda.compare.summary import COMPARE_METRICS, gap_closed, summarize_compare
from sidda.compare.tables import format_markdown, format_text

__all__ = [
    "COMPARE_METRICS",
    "CompareResult",
    "MethodSpec",
    "format_markdown",
    "format_text",
    "gap_closed",
    "parse_data",
    "parse_method",
    "run_compare",
    "summarize_compare",
]
