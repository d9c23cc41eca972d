"""Evaluated runs side by side: a label-free ranking, and how far each validator can be trusted.

Both read what :func:`~sidda.experiments.evaluate_run` wrote (``metrics.json`` dicts: their
``label_free`` diagnostics and the target accuracy); ``sidda compare`` and ``sidda sweep`` use
them.

* :func:`label_free_ranking` orders runs (or groups of runs, such as a method's seeds) by one
  validator, higher first, **healthy before collapsed**: every entry whose collapse flag is
  raised comes after every healthy one, whatever its score, so a run that put the target in
  one class is listed and marked but never ranked first over a healthy one. Entries the
  validator could not score come last, without a rank; tied scores share a rank
  (:func:`~sidda.metrics.rank_runs`).
* :func:`agreement` is :func:`~sidda.metrics.validator_agreement` over runs that have target
  labels: per validator the weighted Spearman correlation of its scores with the target
  accuracies (Musgrave et al., 2022), Spearman's rho, and the regret of its pick.

:func:`standings` gives one or the other for runs in groups: the ranking when no run has target
labels, else the agreement. :func:`run_facts` reads one run's numbers, :func:`label_free_columns`
summarises a group's over seeds (the label-free columns of the tables), :func:`group_entry`
makes a group's ranking entry. The text helpers (:func:`standings_tables`,
:func:`ranking_table`, :func:`agreement_table`, :func:`text_table`, :func:`markdown_table`) give
the tables the commands print and write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import NamedTuple

from sidda._text import DASH, fmt_cell
from sidda.evaluate.curves import mean_std
from sidda.metrics.ranking import (
    DEFAULT_VALIDATOR,
    finite_number,
    rank_runs,
    validator_agreement,
)

__all__ = ["AGREEMENT_FIELDS", "DEFAULT_VALIDATOR", "RunFacts", "agreement", "agreement_rows",
           "agreement_table", "collapse_cell", "group_entry", "label_free_columns",
           "label_free_ranking", "markdown_table", "ranked_by", "ranking_table", "run_facts",
           "standings", "standings_tables", "text_table"]


class RunFacts(NamedTuple):
    """The label-free numbers of one evaluated run (None: not in its ``metrics.json``)."""

    score: float | None  #: the chosen validator's score
    collapse: bool | None  #: the collapse flag
    distance: float | None  #: Sinkhorn divergence (fixed blur) of source val and target latents
    validators: dict  #: every validator's score
    target_accuracy: float | None  #: None without target labels
    skipped: str | None  #: why the validator could not score this run


def run_facts(metrics: Mapping, *, validator: str = DEFAULT_VALIDATOR) -> RunFacts:
    """The :class:`RunFacts` of a ``metrics.json`` dict.

    >>> facts = run_facts({"label_free": {"validators": {"class_ami": 0.5},
    ...                                   "collapse": {"flag": False}, "domain_distance": {}},
    ...                    "target": {"labelled": False}})
    >>> facts.score, facts.collapse, facts.target_accuracy
    (0.5, False, None)
    """
    lf = metrics.get("label_free") or {}
    scores = lf.get("validators") or {}
    skipped = (lf.get("validators_skipped") or {}).get(validator)
    if not lf:
        skipped = "no label-free diagnostics in metrics.json"
    flag = (lf.get("collapse") or {}).get("flag")
    return RunFacts(finite_number(scores.get(validator)), flag if isinstance(flag, bool) else None,
                    finite_number((lf.get("domain_distance") or {}).get("sinkhorn_fixed_blur")),
                    {k: finite_number(v) for k, v in scores.items()},
                    finite_number((metrics.get("target") or {}).get("accuracy")), skipped)


def label_free_columns(reports: Sequence[Mapping], *, validator: str = DEFAULT_VALIDATOR
                       ) -> dict:
    """The label-free columns of a group of runs (a method's seeds): ``validator``,
    ``validator_mean`` / ``_std`` / ``_per_seed``, ``collapse_per_seed``, ``collapsed_seeds``
    and ``sinkhorn_mean`` / ``_std`` (sample std, ddof 1; None where no run has the value).

    >>> cols = label_free_columns([{"label_free": {"validators": {"class_ami": 0.5}}}])
    >>> cols["validator_mean"], cols["collapsed_seeds"], cols["sinkhorn_mean"]
    (0.5, 0, None)
    """
    facts = [run_facts(m, validator=validator) for m in reports]
    out: dict = {"validator": validator}
    out["validator_mean"], out["validator_std"], _ = mean_std([f.score for f in facts])
    out["validator_per_seed"] = [f.score for f in facts]
    out["collapse_per_seed"] = [f.collapse for f in facts]
    out["collapsed_seeds"] = sum(bool(f.collapse) for f in facts)
    out["sinkhorn_mean"], out["sinkhorn_std"], _ = mean_std([f.distance for f in facts])
    return out


def ranked_by(validator: str) -> str:
    """The sentence that says how a table was ranked.

    >>> ranked_by("im")
    'ranked by IM (a label-free validator; see docs/evaluation.md for how far to trust it)'
    """
    return (f"ranked by {validator.upper()} (a label-free validator; see docs/evaluation.md for "
            "how far to trust it)")


def label_free_ranking(entries: Sequence[Mapping]) -> list[dict]:
    """Entries ordered as the module docstring says, each with its ``rank``.

    Args:
        entries: ``[{"name": str (unique), "score": float or None, "collapse": bool or None,
            ...}]``; other keys are kept. A None collapse flag counts as healthy.

    Returns:
        Copies of the entries, best first, each with ``rank`` (1 = best; None when unscored).

    >>> [(e["name"], e["rank"]) for e in label_free_ranking([
    ...     {"name": "a", "score": 0.9, "collapse": True},
    ...     {"name": "b", "score": 0.2, "collapse": False},
    ...     {"name": "c", "score": None, "collapse": False}])]
    [('b', 1), ('a', 2), ('c', None)]
    """
    out, unscored, offset = [], [], 0
    for collapsed in (False, True):
        group = [e for e in entries if bool(e.get("collapse")) == collapsed]
        if not group:
            continue
        by_name = {str(e["name"]): e for e in group}
        ranked = rank_runs([{"name": str(e["name"]), "validators": {"v": e.get("score")}}
                            for e in group], "v")
        for r in ranked:
            entry = dict(by_name[r["name"]]) | {"rank": None if r["rank"] is None
                                                else r["rank"] + offset}
            (out if r["rank"] is not None else unscored).append(entry)
        offset += sum(r["rank"] is not None for r in ranked)
    return out + unscored


def group_entry(name: str, facts: Sequence[RunFacts]) -> dict:
    """A ranking entry for a group of runs (a method's seeds, a sweep's config): the mean score
    of the runs the validator scored (``std``, ``n_scored``), the runs' collapse ``flags``, and
    ``collapse`` when any run of the group raised its flag.

    >>> e = group_entry("m", [RunFacts(0.2, False, None, {}, None, None),
    ...                       RunFacts(0.4, True, None, {}, None, None)])
    >>> round(e["score"], 3), e["collapse"], e["flags"]
    (0.3, True, [False, True])
    """
    mean, std, n = mean_std([f.score for f in facts])
    why = next((f.skipped for f in facts if f.score is None and f.skipped), None)
    return {"name": name, "score": mean, "std": std, "n": len(facts), "n_scored": n,
            "flags": [f.collapse for f in facts], "collapse": any(f.collapse for f in facts),
            "why": why}


def standings(groups: Mapping[str, Sequence[tuple[str, Mapping]]], *,
              validator: str = DEFAULT_VALIDATOR) -> dict:
    """Ranking or agreement of runs in groups (``{group: [(run name, metrics.json)]}``).

    Returns:
        ``{"validator", "labelled_runs", "ranking", "agreement"}``: without any target label,
        ``ranking`` is ``{"groups": ranked groups (:func:`group_entry`), "runs": ranked runs}``
        by :func:`label_free_ranking` and ``agreement`` is None; with target labels on some
        runs, ``agreement`` is :func:`agreement` over every run and ``ranking`` None.
    """
    runs = [(name, m) for members in groups.values() for name, m in members]
    facts = {name: run_facts(m, validator=validator) for name, m in runs}
    labelled = sum(f.target_accuracy is not None for f in facts.values())
    out: dict = {"validator": validator, "labelled_runs": labelled, "ranking": None,
                 "agreement": None}
    if labelled:
        out["agreement"] = _agreement([(name, m, facts[name]) for name, m in runs])
        return out
    out["ranking"] = {
        "groups": label_free_ranking([group_entry(g, [facts[n] for n, _ in members])
                                      for g, members in groups.items()]),
        "runs": label_free_ranking([{"name": n, "score": f.score, "collapse": f.collapse,
                                     "why": f.skipped} for n, f in facts.items()]),
    }
    return out


def agreement(runs: Sequence[tuple[str, Mapping]]) -> dict | None:
    """:func:`~sidda.metrics.validator_agreement` of named runs' ``metrics.json`` (the runs
    without label-free diagnostics left out); None when no run has target labels or scores.

    Args:
        runs: ``[(name, metrics)]``, names unique.
    """
    return _agreement([(name, m, run_facts(m)) for name, m in runs])


def _agreement(runs: Sequence[tuple[str, Mapping, RunFacts]]) -> dict | None:
    """:func:`agreement` of runs whose :class:`RunFacts` are read already."""
    items = [{"name": name, "validators": facts.validators,
              "target_accuracy": facts.target_accuracy}
             for name, m, facts in runs
             if (m.get("label_free") or {}).get("validators") is not None]
    if not items or all(i["target_accuracy"] is None for i in items):
        return None
    return validator_agreement(items)


_cell = partial(fmt_cell, digits=3, missing=DASH)

#: The columns of an agreement CSV (``compare_agreement.csv`` adds ``data`` first).
AGREEMENT_FIELDS = ("validator", "default", "weighted_spearman", "spearman", "regret", "pick",
                    "pick_accuracy", "n_runs", "n_scored", "reason")


def agreement_rows(result: Mapping, *, validator: str = DEFAULT_VALIDATOR,
                   **keys: object) -> list[dict]:
    """One CSV row per validator of an :func:`agreement` result (:data:`AGREEMENT_FIELDS`),
    after the given ``keys``; ``default`` marks ``validator``."""
    return [dict(keys) | {"validator": name, "default": name == validator}
            | {k: v[k] for k in AGREEMENT_FIELDS[2:]} for name, v in result["validators"].items()]


def collapse_cell(flags: Sequence[bool | None]) -> str:
    """The collapse column of a group of runs: ``no``, ``COLLAPSE?``, ``1 of 3 COLLAPSE?``.

    >>> collapse_cell([False, False]), collapse_cell([True]), collapse_cell([True, False])
    ('no', 'COLLAPSE?', '1 of 2 COLLAPSE?')
    """
    known = [f for f in flags if f is not None]
    raised = sum(known)
    if not known:
        return "–"
    if not raised:
        return "no"
    return "COLLAPSE?" if raised == len(flags) else f"{raised} of {len(flags)} COLLAPSE?"


def ranking_table(ranked: Sequence[Mapping], *, validator: str, what: str
                  ) -> tuple[list[str], list[list[str]]]:
    """Head and rows of a :func:`label_free_ranking`: of runs (``what="run"``), or of groups
    (:func:`group_entry`: their mean score, number of runs and collapse flags)."""
    runs = what == "run"
    head = ["rank", what, f"{validator.upper()}{'' if runs else ' (mean)'}", "collapse"]
    if not runs:
        head.insert(3, "runs")
    rows = []
    healthy = any(not e.get("collapse") and e.get("score") is not None for e in ranked)
    for e in ranked:
        cell = collapse_cell(e.get("flags", [e.get("collapse")]))
        if e.get("collapse") and healthy:
            cell += " (ranked after every healthy one)"
        score = _cell(e.get("score")) if e.get("score") is not None else (
            f"– (not computed: {e['why']})" if e.get("why") else "–")
        row = ["–" if e["rank"] is None else str(e["rank"]), str(e["name"]), score, cell]
        if not runs:
            row.insert(3, str(e.get("n", 1)))
        rows.append(row)
    return head, rows


def agreement_table(result: Mapping, *, validator: str) -> tuple[list[str], list[list[str]]]:
    """Head and rows of an :func:`agreement` result (the default validator starred)."""
    head = ["validator", "weighted Spearman", "Spearman", "regret", "pick (its target acc)"]
    rows = []
    for name, v in result["validators"].items():
        pick = "–" if v["pick"] is None else f"{v['pick']} ({_cell(v['pick_accuracy'])})"
        rows.append([name + ("*" if name == validator else ""), _cell(v["weighted_spearman"]),
                     _cell(v["spearman"]), _cell(v["regret"]), pick])
    return head, rows


def standings_tables(standing: Mapping | None, *, what: str
                     ) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables of a :func:`standings` result, each ``(sentence, head, rows)``: the groups
    (``what``: ``"method"``, ``"config"``) and the runs ranked without target labels, or the
    validators' agreement with target accuracy."""
    if not standing:
        return []
    v = standing["validator"]
    if standing.get("ranking"):
        ranking = standing["ranking"]
        return [(f"No target labels: {what}s {ranked_by(v)}; a {what} with a collapsed run "
                 "comes after every healthy one.", *ranking_table(
                     ranking["groups"], validator=v, what=what)),
                (f"Runs {ranked_by(v)}:", *ranking_table(ranking["runs"], validator=v,
                                                           what="run"))]
    agree = standing.get("agreement")
    if not agree:
        return []
    best = agree["best"]
    return [(f"How far each label-free validator can be trusted here: its ranking of the "
             f"{agree['labelled_runs']} runs with target labels against their target accuracy "
             f"(best: {best['name']}, {best['target_accuracy']:.3f}). Weighted Spearman "
             "(Musgrave et al. 2022) and Spearman's rho: 1 ranks as target accuracy does; "
             "regret: the best target accuracy minus that of the validator's pick; * the "
             "validator that ranks runs without target labels.",
             *agreement_table(agree, validator=v))]


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "  ") -> str:
    """Fixed-width text, left-aligned, a rule under the head.

    >>> print(text_table(["a", "bb"], [["1", "2"]], indent=""))
    a  bb
    -----
    1  2
    """
    table = [list(head)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(indent + line for line in lines)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table (``|`` in a cell escaped).

    >>> print(markdown_table(["a"], [["x|y"]]))
    | a |
    |---|
    | x\\|y |
    """
    esc = [[c.replace("|", "\\|") for c in r] for r in [list(head), *rows]]
    return "\n".join(["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in head) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in esc[1:]])
