"""The report's first screen: what each run did to the target, read without a target label.

One table, one row per run, from the evaluation's ``metrics["label_free"]`` (the dict of
:func:`sidda.evaluate.label_free_diagnostics`): the share of target images predicted as each
class beside the class's share of the source training labels, the collapse flag, the mean
confidence and entropy (target, source validation), the domain distance between source
validation and target latents, and every label-free validator (higher is better; the one that
orders runs by default, :data:`sidda.metrics.DEFAULT_VALIDATOR`, is marked). A raised collapse
flag also gets a banner above the table with its reasons. An evaluation without the entry (an
older sidda) is named and left empty.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidda.evaluate.diagnostics import MIN_IMAGES, OVER_FACTOR, OVER_MARGIN
from sidda.metrics import DEFAULT_VALIDATOR
from sidda.report.loading import ReportRun
from sidda.report.markup import esc, fmt

__all__ = ["NOT_COMPUTED", "overview_html"]

#: What a run without label-free diagnostics shows.
NOT_COMPUTED = "not computed (re-evaluate with sidda evaluate)"
_DISTANCES = (("sinkhorn_fixed_blur", "Sinkhorn"), ("mmd2", "MMD\u00b2"),
              ("domain_accuracy", "domain clf. acc."), ("pad", "PAD"))


def _d(x: object) -> dict:
    return x if isinstance(x, dict) else {}


def _pct(v: object) -> str:
    return f"{100 * v:.0f}%" if isinstance(v, int | float) and not isinstance(v, bool) else "\u2013"


def _td(text: str, cls: str = "", title: str = "") -> str:
    attrs = (f" class='{cls}'" if cls else "") + (f" title='{esc(title)}'" if title else "")
    return f"<td{attrs}>{esc(text)}</td>"


def _names(entries: Sequence[dict], key: str) -> list[str]:
    """The keys of ``entry[key]`` over all entries, in order of first appearance."""
    return list(dict.fromkeys(k for e in entries for k in _d(e.get(key))))


def _row(r: ReportRun, lf: dict, classes: list[str], validators: list[str]) -> str:
    collapse = _d(lf.get("collapse"))
    marked = set(collapse.get("over_predicted") or []) | set(collapse.get("missing") or [])
    fractions = _d(lf.get("class_fractions"))
    cells = [_td(r.label, "l"), _td(fmt(_d(lf.get("n")).get("target")))]
    for c in classes:
        f = _d(fractions.get(c))
        text = (f"{_pct(f.get('target_predicted'))} ({_pct(f.get('source_labels'))})"
                if f else "")
        cells.append(_td(text, "hi" if c in marked else ""))
    flag = collapse.get("flag")
    reasons = "; ".join(map(str, collapse.get("reasons") or []))
    cells.append(_td("RAISED" if flag else "no" if flag is False else "not computable",
                     "alarm" if flag else "", reasons))
    for key in ("mean_confidence", "mean_entropy"):
        d = _d(lf.get(key))
        cells.append(_td(f"{fmt(d.get('target'))} ({fmt(d.get('source'))})"))
    dist = _d(lf.get("domain_distance"))
    skipped = _d(dist.get("skipped"))
    for key, _ in _DISTANCES:
        cells.append(_td(fmt(dist.get(key)), title=str(skipped.get(key, ""))))
    scores, why = _d(lf.get("validators")), _d(lf.get("validators_skipped"))
    for v in validators:
        cells.append(_td(fmt(scores.get(v)), title=str(why.get(v, ""))))
    return "<tr>" + "".join(cells) + "</tr>"


def overview_html(runs: Sequence[ReportRun]) -> str:
    """The first-screen section (module docstring) of the runs on a page."""
    found = {r.label: r.metrics["label_free"] for r in runs
             if isinstance(r.metrics.get("label_free"), dict)}
    entries = list(found.values())
    classes, validators = _names(entries, "class_fractions"), _names(entries, "validators")
    if DEFAULT_VALIDATOR in validators:  # the default first
        validators.insert(0, validators.pop(validators.index(DEFAULT_VALIDATOR)))
    blur = next((_d(e.get("domain_distance")).get("blur") for e in entries
                 if _d(e.get("domain_distance")).get("blur") is not None), None)
    alarms = []
    for label, lf in found.items():
        c = _d(lf.get("collapse"))
        if c.get("flag"):
            items = "".join(f"<li>{esc(x)}</li>" for x in c.get("reasons") or [])
            alarms.append(f"<div class='alarm'>Collapse flag raised for {esc(label)}: the "
                          f"target predictions pile onto few classes.<ul>{items}</ul></div>")
    width = 2 + len(classes) + 3 + len(_DISTANCES) + len(validators)
    body = []
    for r in runs:
        if r.label in found:
            body.append(_row(r, found[r.label], classes, validators))
        else:
            body.append(f"<tr>{_td(r.label, 'l')}<td class='na' colspan='{width - 1}'>"
                        f"label-free diagnostics {esc(NOT_COMPUTED)}</td></tr>")
    vhead = "".join(
        f"<th title='the default validator'>{esc(v)} \u2605 default</th>"
        if v == DEFAULT_VALIDATOR else f"<th>{esc(v)}</th>" for v in validators)
    head = (
        "<thead><tr><th class='l' rowspan='2'>run</th><th rowspan='2'>target images</th>"
        + (f"<th class='c' colspan='{len(classes)}'>predicted on the target (source labels)"
           "</th>" if classes else "")
        + "<th rowspan='2'>collapse</th><th class='c' colspan='2'>target (source val)</th>"
        f"<th class='c' colspan='{len(_DISTANCES)}'>domain distance, source val vs target"
        + (f" (Sinkhorn blur {esc(fmt(blur))})" if blur is not None else "") + "</th>"
        + (f"<th class='c' colspan='{len(validators)}'>label-free validators (higher is "
           "better)</th>" if validators else "")
        + "</tr><tr>" + "".join(f"<th>{esc(c)}</th>" for c in classes)
        + "<th>mean confidence</th><th>mean entropy</th>"
        + "".join(f"<th>{esc(t)}</th>" for _, t in _DISTANCES) + vhead + "</tr></thead>")
    return (
        "<h2 id='overview'>What happened on the target (no target label read)</h2>"
        + "".join(alarms)
        + f"<div class='wide'><table>{head}<tbody>{''.join(body)}</tbody></table></div>"
        "<p class='note'>Per class: the share of target test images predicted as it, and in "
        "brackets its share of the source training labels; highlighted: a class the collapse "
        f"rule names. <b>Collapse</b>: raised when a class takes at least {OVER_FACTOR} times "
        f"its source share (and {100 * OVER_MARGIN:.0f} points more), or a class with a source "
        f"share is never predicted, by {MIN_IMAGES} images or more; a label shift can raise "
        "it too, so it says look, not failed (hover for the reasons). Mean confidence: softmax "
        "maximum; entropy in nats. Domain distance between source validation and target "
        "latents: debiased Sinkhorn divergence at a fixed blur, "
        "Gaussian-kernel MMD\u00b2, balanced accuracy of a domain classifier and its proxy "
        "A-distance (0: indistinguishable). Validators rank checkpoints and runs without target "
        f"labels; \u2605 marks the default ({esc(DEFAULT_VALIDATOR)}); hover a dash for why a "
        "score is missing. Target accuracy, where target labels exist, is in the summary "
        "below.</p>"
    )
