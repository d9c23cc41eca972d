"""Training curves over several runs (sidda.evaluate.curves): mean and spread per epoch."""

import math

import numpy as np

from sidda.evaluate import distance_curves, group_curves, mean_std


def test_group_curves_handles_ragged_runs_and_gaps():
    a = [{"epoch": 0, "d": None}, {"epoch": 1, "d": 2.0}, {"epoch": 2, "d": 4.0}]
    b = [{"epoch": 0, "d": None}, {"epoch": 1, "d": 4.0}]  # stopped early
    c = [{"epoch": 0, "x": 1.0}]  # never logged the column
    st = group_curves([a, b, c], "d")
    assert st.n == 2 and list(st.epochs) == [1, 2]
    assert np.allclose(st.mean, [3.0, 4.0]) and np.allclose(st.std, [np.sqrt(2), 0.0])
    assert group_curves([c], "d") is None


def test_distance_curves_prefer_the_distance_columns():
    h = [[{"epoch": 1, "val_sinkhorn_fixed": 1.0, "val_da": 5.0}]]
    assert list(distance_curves({"g": h})) == ["val_sinkhorn_fixed"]
    assert list(distance_curves({"g": [[{"epoch": 1, "val_da": 5.0}]]})) == ["val_da"]
    assert distance_curves({"g": [[{"epoch": 1}]]}) == {}


def test_mean_std_is_numpys_over_the_finite_values():
    vals = [0.5, None, 2.0, math.nan, 4.5]
    mean, std, n = mean_std(vals)
    assert n == 3 and mean == np.mean([0.5, 2.0, 4.5])
    assert std == np.std([0.5, 2.0, 4.5], ddof=1)
    assert mean_std([7.0]) == (7.0, 0.0, 1) and mean_std([None, math.inf]) == (None, None, 0)


def test_sweep_and_plots_use_the_same_curve_stats():
    import sidda.plots
    import sidda.sweep
    from sidda.evaluate import CurveStats

    assert sidda.sweep.distance_curves is sidda.evaluate.distance_curves
    assert sidda.sweep._mean_std is mean_std and sidda.plots.CurveStats is CurveStats
