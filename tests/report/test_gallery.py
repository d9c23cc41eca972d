"""Gallery pieces: the images picked per class, thumbnails, colours, a FITS-like data folder."""

import base64
import csv
import io

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from sidda.datasets import to_rgb, write_layout  # noqa: E402
from sidda.datasets.preview import check_colour, colour_for  # noqa: E402
from sidda.errors import InputError  # noqa: E402
from sidda.report.gallery import (  # noqa: E402
    MAX_THUMBNAILS,
    PER_SIDE,
    gallery_html,
    per_side_for,
    pick_gallery,
    thumbnail,
)
from sidda.report.loading import ReportRun  # noqa: E402
from sidda.runs import History, RunDir, RunInfo  # noqa: E402

THUMB = "target test image "


def test_pick_gallery_is_the_literal_ranking_with_ties():
    rng = np.random.default_rng(3)
    logits = np.round(rng.normal(size=(80, 4)), 1)  # rounding makes tied confidences
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[:, 3] = 0.0  # class 3 never predicted
    picks = pick_gallery(probs, per_side=5)
    for k, g in enumerate(picks):
        mine = [(probs[i].max(), i) for i in range(len(probs)) if np.argmax(probs[i]) == k]
        most = [i for _, i in sorted(mine, key=lambda t: (-t[0], t[1]))][:5]
        least = [i for _, i in sorted((c, i) for c, i in mine if i not in most)][:5]
        assert g.most.tolist() == most and g.least.tolist() == least and g.count == len(mine)
    assert picks[3].count == 0 and not len(picks[3].most) and not len(picks[3].least)
    small = pick_gallery(np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]]), per_side=2)
    assert small[0].most.tolist() == [0, 1] and small[0].least.tolist() == [2]  # no repeats


def test_thumbnail_is_a_block_mean():
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, size=(130, 130, 3), dtype=np.uint8)
    t = thumbnail(im, max_pixels=64)  # factor 3: 43 x 43, the last row and column dropped
    assert t.shape == (43, 43, 3) and t.dtype == np.uint8
    for r, c in ((0, 0), (10, 21), (42, 42)):
        block = im[3 * r:3 * r + 3, 3 * c:3 * c + 3].astype(float)
        assert np.array_equal(t[r, c], np.round(block.reshape(9, 3).mean(0)))
    small = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    assert thumbnail(small) is small


def test_colour_choices_follow_sidda_data_show():
    assert colour_for({"format": "fits"}, 3, None) == (2, 1, 0)  # z, r, g as R, G, B
    assert colour_for({"format": "fits"}, 5, None) == (2, 1, 0)
    assert colour_for({"format": "fits"}, 1, None) is None
    assert colour_for({"format": "image"}, 3, None) is None
    assert colour_for({"format": "fits"}, 3, (0, 1, 2)) == (0, 1, 2)
    assert check_colour([2, 1, 0], "lupton") == (2, 1, 0) and check_colour(None, "asinh") is None
    for rgb, stretch in (((1, 2), "linear"), ((-1,), "linear"), ((True, 0, 1), "linear"),
                         (None, "log")):
        with pytest.raises(InputError):
            check_colour(rgb, stretch)


def test_many_runs_get_fewer_images_per_class():
    assert per_side_for([3]) == PER_SIDE
    for ks in ([10] * 5, [10] * 30, [100] * 10):
        n = per_side_for(ks)
        assert 1 <= n <= PER_SIDE and (n == 1 or 2 * n * sum(ks) <= MAX_THUMBNAILS)
    assert per_side_for([10] * 5) == 4  # 480 // 100


def test_a_three_band_fits_import_is_drawn_z_r_g(tmp_path):
    """A data folder recorded as a FITS import (bands g, r, z): the gallery draws bands
    2, 1, 0 as R, G, B and names each image's imported file."""
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=(10, 8, 8, 3)).astype(np.float32)  # NHWC, bands g, r, z
    x[:, :, :, 2] *= 3  # z brightest
    y = np.arange(10) % 2
    data = tmp_path / "fits_import"
    write_layout(data, {"x_train_s": x, "y_train_s": y, "x_test_s": x, "y_test_s": y,
                        "x_train_t": x, "x_test_t": x}, target_suffix="_target",
                 manifest={"format": "fits", "class_names": ["star", "E0"]})
    with open(data / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["domain", "split", "index", "label", "file"])
        w.writeheader()
        w.writerows({"domain": "target", "split": "test", "index": i, "label": "",
                     "file": f"cutouts/obj_{i}.fits"} for i in range(10))
    run = tmp_path / "run"
    run.mkdir()
    probs = rng.dirichlet([1.0, 1.0], size=10)  # (10, 2)
    np.save(run / "probs_target.npy", probs)
    info = RunInfo("sidda", "cnn", 3, 2, 8, str(data), "_target", ("star", "E0"))
    r = ReportRun(RunDir(run), "fits run", {"data_path": str(data)}, info, {}, {},
                  f"data: {{path: {data}}}\n", History())
    html = gallery_html(r, base=tmp_path, per_side=2)
    assert "bands 2,1,0 as R,G,B" in html and str(tmp_path) not in html
    from PIL import Image

    shown, got = [], []
    for part in html.split("<img ")[1:]:
        alt = part.split("alt='")[1].split("'")[0]
        assert alt.startswith(THUMB) and "file cutouts/obj_" in alt
        shown.append(int(alt.removeprefix(THUMB).split(",")[0]))
        png = base64.b64decode(part.split("src='")[1].split("'")[0].split(",", 1)[1])
        got.append(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    assert shown == [i for g in pick_gallery(probs, per_side=2) for i in (*g.most, *g.least)]
    counts = np.bincount(probs.argmax(1), minlength=2)
    assert len(shown) == sum(min(int(c), 4) for c in counts) > 0  # 2 + 2 per class at most
    want = to_rgb(np.moveaxis(x[shown], -1, 1), rgb=(2, 1, 0))
    assert np.array_equal(np.stack(got), want)
