"""The report's training curves: every run on shared axes, x in epochs, seeds as mean +- sd."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from sidda.report.curves import (  # noqa: E402
    CURVE_FIGURES,
    seed_groups,
    step_epochs,
    training_curves,
    warmup_epochs,
)
from sidda.runs import History  # noqa: E402


def _history(*, epochs=4, steps_per_epoch=3, warmup=1, scale=1.0, sidda=True):
    """A history as training writes it: epochs 1..E (the first ``warmup`` of them warm-up),
    ``steps_per_epoch`` steps each, numbered from 0 over the whole run."""
    rows, steps = [], []
    for e in range(1, epochs + 1):
        warm = e <= warmup
        phase = ("warmup" if warm else "sidda") if sidda else "source_only"
        row = {"epoch": e, "phase": phase, "lr": 0.01, "train_total": scale / e,
               "train_ce": 0.9 * scale / e, "val_total": 1.2 * scale, "val_ce": scale,
               "val_acc_s": 0.5 + 0.1 * e * scale, "val_sinkhorn_fixed": scale / e,
               "train_da": None if warm or not sidda else 0.1 * scale,
               "val_da": None if warm or not sidda else 0.2 * scale}
        if sidda:
            row.update(eta_1=1.0, eta_2=1.0, val_js_paper=None if warm else 2.0 - 0.1 * e)
        rows.append(row)
        for j in range(steps_per_epoch):
            s = (e - 1) * steps_per_epoch + j
            step = {"epoch": e, "step": s, "phase": phase, "ce": 1.0}
            if sidda:
                step.update(eta_1=scale * (1.0 + 0.1 * s), eta_2=2.0,
                            blur=None if warm else 0.05 + 0.01 * j)
            steps.append(step)
    return History(rows, steps)


def _axes(fig):
    return {ax.get_title(): ax for ax in fig.get_axes() if ax.get_visible()}


def _curve_lines(ax):
    """The lines of the curves (each carries its curve's label as gid)."""
    return [ln for ln in ax.get_lines() if ln.get_gid()]


def test_every_run_is_a_line_on_the_same_axes():
    runs = {"a": [_history()], "b": [_history(scale=2.0)], "c": [_history(scale=3.0)]}
    figs = training_curves(runs)
    assert list(figs) == list(CURVE_FIGURES)  # one figure per quantity, all of them here
    losses = _axes(figs["losses"])
    # objective: train and validation of every run on one axes
    assert sorted(ln.get_gid() for ln in _curve_lines(losses["objective (CE + DA)"])) == [
        "a", "a", "b", "b", "c", "c"]
    acc = _axes(figs["source validation accuracy"])["source validation accuracy"]
    lines = {ln.get_gid(): ln for ln in _curve_lines(acc)}
    assert sorted(lines) == ["a", "b", "c"]
    assert np.allclose(lines["b"].get_ydata(), [0.5 + 0.2 * e for e in range(1, 5)])
    assert len({ln.get_color() for ln in lines.values()}) == 3


def test_learned_weights_are_drawn_per_step_in_epochs():
    """Step j of the n steps of epoch e sits at e - 1 + (j + 1) / n; the weight is 1/eta^2."""
    h = _history(epochs=4, steps_per_epoch=3)
    ax = _axes(training_curves({"run": [h]})["learned weights"])["eta_1^-2 (weight on CE)"]
    (line,) = _curve_lines(ax)
    expected_x, expected_y = [], []
    for r in h.steps:  # a literal loop over the rows of history_steps.csv
        expected_x.append(r["step"] / 3 + 1 / 3)
        expected_y.append(1 / r["eta_1"] ** 2)
    assert np.allclose(line.get_xdata(), expected_x)
    assert np.allclose(line.get_ydata(), expected_y)
    assert ax.get_xlabel() == "epoch" and max(line.get_xdata()) == 4.0  # ends on the last epoch
    # every panel of every figure is over epochs
    for fig in training_curves({"run": [h]}).values():
        assert {ax.get_xlabel() for ax in fig.get_axes() if ax.get_visible()} == {"epoch"}


def test_step_epochs_orders_steps_within_their_epoch():
    rows = [{"epoch": 2, "step": 5}, {"epoch": 2, "step": 4}, {"epoch": 1, "step": 0},
            {"epoch": 1, "step": 1}, {"epoch": None, "step": 9}]
    x = step_epochs(rows)
    assert np.allclose(x[:4], [2.0, 1.5, 0.5, 1.0]) and np.isnan(x[4])


def test_the_warm_up_shading_covers_its_epochs_in_every_figure():
    """Warm-up epochs 1..2 are training time 0..2 in epochs, for epoch and step values alike."""
    runs = {"a": [_history(warmup=2)], "b": [_history(warmup=2, scale=2.0)],
            "source only": [_history(warmup=0, sidda=False)]}  # no warm-up: no say in it
    assert warmup_epochs(runs["a"][0]) == 2 and warmup_epochs(runs["source only"][0]) == 0
    for fig in training_curves(runs).values():
        for ax in (a for a in fig.get_axes() if a.get_visible()):
            spans = [p for p in ax.patches if p.get_label() == "warm-up"]
            assert len(spans) == 1
            assert (spans[0].get_x(), spans[0].get_x() + spans[0].get_width()) == (0.0, 2.0)
    # different warm-up lengths: no shading, a dotted line at each run's end of warm-up
    fig = training_curves({"a": [_history(warmup=1)], "b": [_history(warmup=2)]})["losses"]
    ax = _axes(fig)["CE"]
    assert not ax.patches
    ends = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":")
    assert ends == [1, 2]


def test_seeds_of_one_config_are_a_mean_with_a_band():
    seeds = [_history(scale=s) for s in (1.0, 2.0, 4.0)]
    fig = training_curves({"sidda / cnn, seeds 0, 1, 2": seeds})["source validation accuracy"]
    ax = _axes(fig)["source validation accuracy"]
    (line,) = _curve_lines(ax)
    per_run = np.array([[r["val_acc_s"] for r in h.epochs] for h in seeds])  # (3, E)
    assert np.allclose(line.get_ydata(), per_run.mean(0))
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    sd = per_run.std(0, ddof=1)
    assert np.isclose(band.max(), (per_run.mean(0) + sd).max())
    assert np.isclose(band.min(), (per_run.mean(0) - sd).min())


def test_the_legend_sits_outside_every_axes():
    runs = {f"run {i} with a long name": [_history(scale=1.0 + i)] for i in range(6)}
    for fig in training_curves(runs).values():
        fig.draw_without_rendering()  # runs the constrained layout
        (legend,) = fig.legends
        box = legend.get_window_extent()
        assert len(legend.get_texts()) >= 6
        for ax in (a for a in fig.get_axes() if a.get_visible()):
            assert not box.overlaps(ax.get_window_extent()), ax.get_title()


def test_absent_columns_leave_figures_and_legend_entries_out():
    runs = {"source only": [_history(sidda=False)]}
    figs = training_curves(runs)
    assert "learned weights" not in figs and "losses" in figs
    assert "DA (alignment loss)" not in _axes(figs["losses"])
    assert training_curves({"empty": [History()]}) == {}
    both = training_curves({"source only": runs["source only"], "sidda": [_history()]})
    labels = [t.get_text() for t in both["learned weights"].legends[0].get_texts()]
    assert "sidda" in labels and "source only" not in labels  # no line there, no entry


def test_seed_groups_join_only_configs_that_differ_in_the_seed():
    def cfg(seed, lr=0.01, name="x"):
        return {"name": name, "out_dir": "/somewhere", "model": {"name": "cnn"},
                "loss": {"method": "sidda"}, "train": {"seed": seed, "lr": lr}}

    groups = seed_groups(["a", "b", "c", "d", "e"],
                         [cfg(0, name="a"), cfg(1, name="b"), cfg(0, lr=0.1), cfg(0, lr=0.1),
                          None])
    assert groups == {"sidda / cnn, seeds 0, 1": [0, 1], "c": [2], "d": [3], "e": [4]}
