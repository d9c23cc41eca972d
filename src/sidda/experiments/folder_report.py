"""Predictions scored against class folders: ``sidda predict RUN folder/ --out preds.csv`` on a
folder whose sub-folders are named after the run's classes.

When every image lies in a sub-folder and every sub-folder's name is one of the run's classes,
the sub-folder is the image's label: :func:`folder_labels` reads them, and :func:`score` gives
the accuracy, the confusion matrix (rows: true class, columns: predicted) and the per-class
report of :func:`sidda.metrics.classification_report` (precision, recall, F1, support; the
layout of scikit-learn's), which :func:`format_score` prints as scikit-learn's text report does.
:func:`write_score` writes both next to the CSV (``preds.report.txt`` and ``preds.report.json``).
Names are compared in Unicode NFC, as class folders are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sidda.datasets.imagefiles import nfc
from sidda.metrics import classification_report, confusion_matrix
from sidda.runs import atomic_write, write_json

__all__ = ["FolderLabels", "Score", "folder_labels", "format_score", "score", "write_score"]


class FolderLabels(NamedTuple):
    """What the sub-folders of a prediction folder say."""

    labels: np.ndarray | None  # (N,) class index per image, or None: not class folders
    note: str  # why not, for the user ("" when labelled)


class Score(NamedTuple):
    """Predictions against the folder labels."""

    accuracy: float
    confusion: list[list[int]]  # (K, K): rows true class, columns predicted class
    report: dict  # sidda.metrics.classification_report


def folder_labels(names: Sequence[str], class_names: Sequence[str]) -> FolderLabels:
    """Labels from the first folder of each image's relative path (``"spiral/x.png"``).

    >>> folder_labels(["b/1.png", "a/2.png"], ["a", "b"]).labels.tolist()
    [1, 0]
    >>> folder_labels(["x.png"], ["a", "b"]).labels is None
    True
    """
    index = {nfc(c): k for k, c in enumerate(class_names)}
    tops = [n.split("/", 1)[0] if "/" in n else None for n in names]
    if not any(tops):
        return FolderLabels(None, "")
    if None in tops:
        return FolderLabels(None, "some images lie outside the sub-folders: predictions only")
    unknown = sorted({t for t in tops if nfc(t) not in index})
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        return FolderLabels(None, f"sub-folders {shown} are not class names of the run "
                            f"({', '.join(class_names)}): predictions only, no accuracy")
    return FolderLabels(np.array([index[nfc(t)] for t in tops]), "")


def score(pred: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> Score:
    """Accuracy, confusion matrix and per-class report of predicted classes ``pred`` (N,)."""
    k = len(class_names)
    cm = confusion_matrix(pred, labels, num_classes=k)
    rep = classification_report(pred, labels, num_classes=k, class_names=list(class_names))
    return Score(float(rep["accuracy"]), cm.tolist(), rep)


def format_score(s: Score, class_names: Sequence[str]) -> str:
    """The score as text: scikit-learn's classification report, then the confusion matrix.

    >>> rep = score(np.array([0, 1, 1]), np.array([0, 0, 1]), ["cat", "dog"])
    >>> print(format_score(rep, ["cat", "dog"]))  # doctest: +NORMALIZE_WHITESPACE
                  precision    recall  f1-score   support
    <BLANKLINE>
             cat       1.00      0.50      0.67         2
             dog       0.50      1.00      0.67         1
    <BLANKLINE>
        accuracy                           0.67         3
       macro avg       0.75      0.75      0.67         3
    weighted avg       0.83      0.67      0.67         3
    <BLANKLINE>
    confusion matrix (rows: true class, columns: predicted)
         cat  dog
    cat    1    1
    dog    0    1
    """
    width = max(len("weighted avg"), *(len(c) for c in class_names))
    head = " " * width + "".join(f"{h:>10}" for h in ("precision", "recall", "f1-score",
                                                       "support"))
    lines = [head, ""]

    def row(name: str, d: dict) -> str:
        return (f"{name:>{width}}" + "".join(f"{d[k]:>10.2f}" for k in
                                             ("precision", "recall", "f1-score"))
                + f"{d['support']:>10}")

    lines += [row(c, s.report[c]) for c in class_names] + [""]
    n = s.report["macro avg"]["support"]
    lines.append(f"{'accuracy':>{width}}" + " " * 20 + f"{s.accuracy:>10.2f}{n:>10}")
    lines += [row(k, s.report[k]) for k in ("macro avg", "weighted avg")]
    cells = [[str(c) for c in class_names]] + [[str(v) for v in r] for r in s.confusion]
    cw = max(len(c) for r in cells for c in r)
    nw = max(len(c) for c in class_names)
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * nw + "".join(f"  {c:>{cw}}" for c in class_names)]
    lines += [f"{c:<{nw}}" + "".join(f"  {v:>{cw}}" for v in r)
              for c, r in zip(class_names, cells[1:], strict=True)]
    return "\n".join(lines)


def write_score(out_csv: str | Path, s: Score, class_names: Sequence[str]) -> tuple[Path, Path]:
    """``<csv stem>.report.txt`` and ``.report.json`` beside ``out_csv``; their paths."""
    out_csv = Path(out_csv)
    stem = out_csv.with_suffix("") if out_csv.suffix.lower() == ".csv" else out_csv
    txt, js = Path(f"{stem}.report.txt"), Path(f"{stem}.report.json")
    atomic_write(txt, format_score(s, class_names) + "\n")
    write_json(js, {"accuracy": s.accuracy, "class_names": list(class_names),
                    "confusion_matrix": s.confusion, "report": s.report})
    return txt, js
