import io
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from sidda import plots  # noqa: E402
from sidda.evaluate import CurveStats, IsomapEmbedding  # noqa: E402


def _png(fig, min_bytes=1000):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes
    return data


def _titles(fig):
    return [ax.get_title() for ax in fig.get_axes() if ax.get_visible()]


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_reliability_bars_are_the_binned_accuracies():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) * 2
    labels = rng.integers(0, 3, 200)
    fig = plots.reliability_diagram({"source": (logits, labels), "target": (logits, labels)},
                                    n_bins=10, temperature=2.0)
    _png(fig)
    panels = [ax for ax in fig.get_axes() if ax.get_title() == "source"]
    assert len(panels) == 1 and _titles(fig).count("target") == 1
    ax = panels[0]
    p = _softmax(logits)
    conf, correct = p.max(1), p.argmax(1) == labels
    bins = np.clip(np.ceil(conf * 10).astype(int) - 1, 0, 9)
    expected = [correct[bins == b].mean() if (bins == b).any() else 0.0 for b in range(10)]
    heights = [r.get_height() for r in ax.containers[0]]  # the accuracy bars
    assert np.allclose(heights, expected)
    # The temperature-scaled markers: accuracy per bin of softmax(z / 2).
    pt = _softmax(logits / 2.0)
    bins_t = np.clip(np.ceil(pt.max(1) * 10).astype(int) - 1, 0, 9)
    exp_t = [(pt.argmax(1) == labels)[bins_t == b].mean() for b in range(10)
             if (bins_t == b).any()]
    line = [ln for ln in ax.get_lines() if "T = 2.00" in ln.get_label()][0]
    ys = np.asarray(line.get_ydata(), float)
    assert np.allclose(ys[np.isfinite(ys)], exp_t)


def test_confusion_matrix_shows_row_normalised_counts():
    cm = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    fig = plots.confusion_matrices({"source": cm}, class_names=["a", "b", "c"])
    _png(fig)
    img = fig.get_axes()[0].get_images()[0].get_array()
    assert np.allclose(img, [[5 / 6, 1 / 6, 0], [0.5, 0.5, 0], [0, 0, 0]])


def test_isomap_figure_draws_both_domains_per_run():
    rng = np.random.default_rng(1)

    def emb(n_s, n_t):
        return IsomapEmbedding(rng.normal(size=(n_s, 2)), rng.normal(size=(n_t, 2)),
                               rng.integers(0, 3, n_s), rng.integers(0, 3, n_t),
                               np.arange(n_s), np.arange(n_t), 5)

    fig = plots.isomap_figure({"cnn": emb(20, 15), "d4 <sidda>": emb(10, 12)},
                              class_names=["line", "rect", "circle"])
    _png(fig)
    axes = [ax for ax in fig.get_axes() if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["cnn", "d4 <sidda>"]
    sizes = [[len(c.get_offsets()) for c in ax.collections] for ax in axes]
    assert sizes == [[20, 15], [10, 12]]


def test_distance_by_group_draws_mean_and_spread():
    st = CurveStats(np.array([1, 2, 3]), np.array([3.0, 2.0, 1.0]), np.array([0.1, 0.2, 0.1]), 2)
    fig = plots.distance_by_group({"val_js_paper": {"d4 / sidda": st, "cnn / sidda": st}},
                                  warmup=1)
    _png(fig)
    ax = fig.get_axes()[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label().endswith("(n=2)")]
    assert len(lines) == 2 and np.allclose(lines[0].get_ydata(), [3, 2, 1])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band.max(), 3.1) and np.isclose(band.min(), 0.9)


def test_missing_matplotlib_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'sidda\[plot\]'"):
        plots.confusion_matrices({"s": np.eye(2)})


@pytest.mark.parametrize("command", [["data", "show", "{data}", "--out", "{tmp}/g.png"],
                                     ["report", "{tmp}/run", "--out", "{tmp}/r.html"]])
def test_commands_that_draw_without_matplotlib_exit_2_with_the_hint(
        monkeypatch, tmp_path, tiny_data, capsys, command):
    from sidda.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    args = [a.format(data=tiny_data, tmp=tmp_path) for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'sidda[plot]'" in err[0], err
    assert "internal error" not in err[0]
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.html"))
