"""Tests for sidda.generators: shapes, seeding, protocols, shifts and argument checks."""

import json

import numpy as np
import pytest
from scipy import ndimage

from sidda.generators import (
    DomainSplits,
    gaussian_psf,
    make_astro,
    make_dataset,
    make_mnist_m,
    make_shapes,
    poisson_snr_noise,
    shot_noise,
)

# Small, fast settings per dataset: (generator options, image shape, number of classes).
SMALL = {
    "shapes": ({"image_size": 32}, (32, 32, 1), 3),
    "astro": ({"image_size": 32}, (32, 32, 1), 3),
    "mnist-m": ({}, (32, 32, 3), 10),
}
ALMOST_NO_NOISE = 1 - 1e-12  # snr -> 1 makes lam ~ 1e-12 * mean: the target equals its base


def _arrays(d: DomainSplits):
    return [d.x_train_s, d.y_train_s, d.x_test_s, d.y_test_s,
            d.x_train_t, d.y_train_t, d.x_test_t, d.y_test_t]


def _assert_same(a: DomainSplits, b: DomainSplits):
    for u, v in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(u, v)


def _keys(images):
    return {img.tobytes() for img in np.asarray(images, dtype=np.float32)}


@pytest.fixture(scope="module", params=list(SMALL))
def small(request):
    name = request.param
    options, _, _ = SMALL[name]
    return name, make_dataset(name, 5, random_state=0, **options)


# ------------------------------------------------------------------ structure and seeding


def test_structure_dtypes_labels_and_balance(small):
    name, d = small
    _, shape, n_classes = SMALL[name]
    assert len(d.class_names) == n_classes
    for x in (d.x_train_s, d.x_test_s, d.x_train_t, d.x_test_t):
        assert x.dtype == np.float32 and x.shape[1:] == shape and np.isfinite(x).all()
    # n_per_class=5, test_fraction=0.2 -> 4 train and 1 test image per class in every split
    for y, per_class in ((d.y_train_s, 4), (d.y_test_s, 1), (d.y_train_t, 4), (d.y_test_t, 1)):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(y, minlength=n_classes), per_class)
    assert len(d.x_train_s) == len(d.y_train_s) == 4 * n_classes
    params = json.loads(json.dumps(d.params))
    assert params["generator"] == name and params["protocol"] == "clean" and params["seed"] == 0
    assert params["n_train_per_class"] == 4 and params["n_test_per_class"] == 1


def test_splits_are_shuffled():
    d = make_shapes(10, image_size=20, random_state=0)
    assert not np.all(np.diff(d.y_train_s) >= 0) and not np.all(np.diff(d.y_train_t) >= 0)


@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_identical_different_seed_differs(name):
    options = SMALL[name][0]
    a = make_dataset(name, 3, random_state=11, **options)
    _assert_same(a, make_dataset(name, 3, random_state=11, **options))
    c = make_dataset(name, 3, random_state=12, **options)
    assert not np.array_equal(a.x_train_s, c.x_train_s)
    assert not np.array_equal(a.x_train_t, c.x_train_t)


def test_independent_of_global_numpy_rng_and_leaves_it_untouched():
    np.random.seed(0)
    a = make_astro(3, image_size=24, random_state=5)
    np.random.seed(12345)
    before = np.random.get_state()
    b = make_astro(3, image_size=24, random_state=5)
    after = np.random.get_state()
    _assert_same(a, b)
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_params_seed_reproduces_generator_and_none_states():
    for state in (None, np.random.default_rng(3)):
        d = make_shapes(3, image_size=20, random_state=state)
        _assert_same(d, make_shapes(3, image_size=20, random_state=d.params["seed"]))
    a = make_shapes(3, image_size=20, random_state=np.random.default_rng(3))
    _assert_same(a, make_shapes(3, image_size=20, random_state=np.random.default_rng(3)))


# ------------------------------------------------------------------------ generators


def test_shapes_source_binary_target_is_integer_noise_added():
    d = make_shapes(4, protocol="paper", random_state=1)
    assert set(np.unique(d.x_train_s)) <= {0.0, 1.0}
    assert d.x_train_s.reshape(len(d.x_train_s), -1).max(axis=1).min() == 1.0  # no blank image
    diff = d.x_train_t - d.x_train_s  # paper: target[i] = source[i] + Poisson noise
    assert (diff >= 0).all() and np.array_equal(diff, np.round(diff))
    assert d.x_train_t.mean() > 10 * d.x_train_s.mean()  # lam = 19 * mean at snr = 0.05


def test_shape_ranges_match_spec_at_100_px_and_scale():
    p100 = make_shapes(2, random_state=0).params
    assert p100["rectangle_center"] == [25, 75] and p100["circle_center"] == [10, 90]
    assert p100["circle_size_clip"] == [10, 30] and p100["line_endpoint"] == [0, 100]
    p50 = make_shapes(2, image_size=50, random_state=0).params
    assert p50["rectangle_center"] == [12, 38] and p50["circle_size_clip"] == [5, 15]


def test_shape_rasteriser_matches_deepbench():
    shapes = pytest.importorskip("deepbench.shapes")
    from sidda.generators.shapes import _shape_drawer  # the private fast grid, vs its origin

    ours, ref = _shape_drawer(100), shapes.Shapes(image_shape=(100, 100))
    calls = [
        ("create_line", {"start": (3, 97), "end": (60, 2), "line_width": 1}),
        ("create_line", {"start": (50, 50), "end": (50, 90), "line_width": 1}),
        ("create_rectangle", {"center": (40, 61), "width": 23, "height": 1}),
        ("create_rectangle", {"center": (25, 74), "width": 50, "height": 51}),
        ("create_ellipse", {"center": (12, 88), "width": 10, "height": 30, "angle": 123.4}),
        ("create_ellipse", {"center": (50, 50), "width": 21, "height": 21, "angle": 0.0}),
    ]
    for method, kwargs in calls:
        np.testing.assert_array_equal(getattr(ours, method)(**kwargs),
                                      getattr(ref, method)(**kwargs))


def test_stars_match_deepbench_star_objects():
    astro = pytest.importorskip("deepbench.astro_object")
    from sidda.generators.astro import _stars_image  # vectorised Moffat sum, vs deepbench

    xs, ys = np.array([3, 50, 97]), np.array([10, 60, 99])
    star = astro.StarObject(image_dimensions=(100, 100), radius=4, amplitude=17.5, seed=0)
    ref = np.sum([star.create_object(int(x), int(y)) for x, y in zip(xs, ys, strict=True)],
                 axis=0)
    ours = _stars_image(xs, ys, radius=4, amplitude=17.5, image_size=100)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_astro_source_blurred_non_negative_and_unnormalised():
    d = make_astro(6, protocol="paper", random_state=2)
    assert d.x_train_s.shape[1:] == (100, 100, 1) and (d.x_train_s >= 0).all()
    assert len(np.unique(d.x_train_s)) > 100  # smooth profiles, not binary
    star_peak = d.x_train_s[d.y_train_s == 2].max()
    assert star_peak > 2 * d.x_train_s[d.y_train_s == 1].max()  # class-dependent scale (F16)
    assert (d.x_train_t >= d.x_train_s - 1e-4).all()  # noise only adds


def test_mnist_m_values_shape_and_targets():
    d = make_mnist_m(3, random_state=0)
    assert d.x_train_s.shape == (30 - 10, 32, 32, 3) and d.x_test_s.shape == (10, 32, 32, 3)
    for x in _arrays(d)[::2]:
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert d.class_names == tuple("0123456789")
    # shot noise at 12.75 counts: values are multiples of 1/12.75, or 1 after clipping
    counts = d.x_train_t * 12.75
    assert np.allclose(counts[d.x_train_t < 1], np.round(counts[d.x_train_t < 1]), atol=1e-4)


# ------------------------------------------------------------------------- protocols


@pytest.mark.parametrize("make", [make_shapes, make_astro])
def test_paper_target_is_shifted_copy_of_same_split(make):
    d = make(6, protocol="paper", snr=ALMOST_NO_NOISE, image_size=32, random_state=4)
    np.testing.assert_array_equal(d.x_train_t, d.x_train_s)
    np.testing.assert_array_equal(d.x_test_t, d.x_test_s)
    np.testing.assert_array_equal(d.y_test_t, d.y_test_s)


def test_clean_domains_and_splits_share_no_image():
    d = make_shapes(30, snr=ALMOST_NO_NOISE, image_size=32, random_state=4)
    train_s, test_s = _keys(d.x_train_s), _keys(d.x_test_s)
    train_t, test_t = _keys(d.x_train_t), _keys(d.x_test_t)
    assert len(train_s) == len(d.x_train_s) and len(train_t) == len(d.x_train_t)  # no repeats
    assert not train_s & test_s and not train_t & test_t
    assert not (train_s | test_s) & (train_t | test_t)


def test_clean_shapes_redraw_blank_lines():
    # ~0.9% of deepbench lines rasterise to nothing; 'clean' redraws them, 'paper' keeps them
    d = make_shapes(100, random_state=0)
    for x in (d.x_train_s, d.x_test_s):
        assert x.reshape(len(x), -1).max(axis=1).min() == 1.0
    t = np.concatenate([d.x_train_t, d.x_test_t])
    assert t.reshape(len(t), -1).max(axis=1).min() >= 1.0


def test_clean_astro_targets_are_not_copies_of_source():
    d = make_astro(6, snr=ALMOST_NO_NOISE, image_size=32, random_state=4)
    keep = d.y_train_s != 1  # spirals have only 21 distinct images under the paper's law
    source = _keys(np.concatenate([d.x_train_s[keep], d.x_test_s[d.y_test_s != 1]]))
    target = _keys(np.concatenate([d.x_train_t[d.y_train_t != 1], d.x_test_t[d.y_test_t != 1]]))
    assert not source & target


def test_mnist_m_psf_paper_pairs_and_clean_does_not():
    paper = make_mnist_m(4, shift="psf", protocol="paper", random_state=3)
    np.testing.assert_array_equal(paper.x_test_t, gaussian_psf(paper.x_test_s))
    np.testing.assert_array_equal(paper.x_train_t, gaussian_psf(paper.x_train_s))
    clean = make_mnist_m(4, shift="psf", protocol="clean", random_state=3)
    blurred = gaussian_psf(np.concatenate([clean.x_train_s, clean.x_test_s]))  # (M, H, W, 3)
    target = np.concatenate([clean.x_train_t, clean.x_test_t])  # (M, H, W, 3)
    gaps = np.abs(blurred[:, None] - target[None]).max(axis=(2, 3, 4))  # (M, M)
    assert gaps.min() > 0.05


def test_mnist_m_limits_digits_per_protocol():
    with pytest.raises(ValueError, match=r"n_per_class=251 exceeds the 250 .* n_per_class <= 250"):
        make_mnist_m(251)
    with pytest.raises(ValueError, match=r"exceeds the 500 real MNIST digits"):
        make_mnist_m(501, protocol="paper")


def test_make_dataset_dispatch_and_aliases():
    _assert_same(make_dataset("shapes", 2, image_size=20, random_state=0),
                 make_shapes(2, image_size=20, random_state=0))
    d = make_dataset("mnist_m", 2, shift="psf", random_state=0)
    assert d.params["generator"] == "mnist-m" and d.params["shift"] == "psf"
    astro = make_dataset("astro_objects", 2, image_size=20, random_state=0)
    assert astro.params["generator"] == "astro" and astro.params["shift"] == "noise"


# ---------------------------------------------------------------------------- shifts


def test_poisson_snr_noise_matches_closed_form_mean_and_variance():
    x = np.full((1, 200, 200, 1), 0.5)
    noisy = poisson_snr_noise(x, snr=0.05, random_state=0)
    lam = 0.5 * (1 / 0.05 - 1)  # 9.5
    assert noisy.dtype == np.float32
    assert abs((noisy - x).mean() - lam) < 0.1
    assert abs((noisy - x).var() / lam - 1) < 0.05
    assert np.array_equal(noisy - 0.5, np.round(noisy - 0.5))  # integer counts added


def test_poisson_snr_noise_level_is_per_image_and_clipped():
    x = np.stack([np.zeros((8, 8, 1)), np.full((8, 8, 1), 200.0)])
    noisy = poisson_snr_noise(x, snr=0.5, random_state=0)  # lam = 0 and 200
    assert (noisy[0] == 0).all()
    assert noisy[1].max() == 255.0


def test_shot_noise_mean_and_variance():
    x, peak = np.full((1, 200, 200, 1), 0.3), 12.75
    noisy = shot_noise(x, peak=peak, random_state=0)
    assert noisy.dtype == np.float32 and noisy.min() >= 0 and noisy.max() <= 1
    assert abs(noisy.mean() - 0.3) < 0.005  # E[Poisson(x p) / p] = x
    assert abs(noisy.var() / (0.3 / peak) - 1) < 0.05  # Var = x / p


def test_gaussian_psf_preserves_point_source_and_matches_scipy():
    x = np.zeros((2, 41, 41, 3))
    x[:, 20, 20, :] = 0.8
    blurred = gaussian_psf(x)
    np.testing.assert_allclose(blurred.sum(axis=(1, 2)), 0.8, rtol=1e-5)
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(3, 16, 20, 3))
    ref = ndimage.gaussian_filter(img[1, :, :, 2], sigma=1.5, mode="reflect", truncate=4.0)
    np.testing.assert_allclose(gaussian_psf(img, sigma=1.5)[1, :, :, 2], ref, atol=1e-6)
    np.testing.assert_array_equal(gaussian_psf(img), gaussian_psf(img))


def test_shifts_are_seeded():
    x = np.full((2, 8, 8, 1), 0.4)
    np.testing.assert_array_equal(shot_noise(x, random_state=1), shot_noise(x, random_state=1))
    assert not np.array_equal(shot_noise(x, random_state=1), shot_noise(x, random_state=2))
    np.testing.assert_array_equal(poisson_snr_noise(x, snr=0.1, random_state=1),
                                  poisson_snr_noise(x, snr=0.1, random_state=1))


# ------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_shapes(1), r"n_per_class must be an integer >= 2, got 1"),
        (lambda: make_shapes(2.5), r"n_per_class .* got 2\.5"),
        (lambda: make_shapes(True), r"n_per_class .* got True"),
        (lambda: make_shapes(4, test_fraction=0), r"test_fraction .* \(0, 1\), got 0"),
        (lambda: make_shapes(4, test_fraction=1.0), r"test_fraction .* got 1\.0"),
        (lambda: make_shapes(2, test_fraction=0.9), r"leaves no training image"),
        (lambda: make_shapes(4, protocol="fair"), r"protocol must be one of .* got 'fair'"),
        (lambda: make_shapes(4, snr=1.5), r"snr .* got 1\.5; the paper uses 0\.05"),
        (lambda: make_astro(4, snr=0), r"snr .* got 0"),
        (lambda: make_shapes(4, image_size=10), r"image_size must be an integer >= 20, got 10"),
        (lambda: make_mnist_m(4, image_size=200), r"image_size must be <= 128"),
        (lambda: make_mnist_m(4, shift="blur"), r"shift must be one of \('noise', 'psf'\)"),
        (lambda: make_shapes(4, random_state=-1), r"random_state must be a non-negative int"),
        (lambda: make_shapes(4, random_state="abc"), r"random_state must be an int, .* got str"),
        (lambda: make_shapes(4, random_state=np.random.RandomState(0)), r"got RandomState"),
        (lambda: make_dataset("cifar", 4), r"unknown dataset name 'cifar'; valid names"),
        (lambda: make_dataset("shapes", 4, shift="psf"), r"shift 'psf' is not available"),
        (lambda: make_dataset("astro", 4, sigma=2), r"unknown option\(s\) \['sigma'\]"),
        (lambda: poisson_snr_noise(np.ones((4, 4)), snr=0.1), r"NHWC .* shape \(4, 4\)"),
        (lambda: poisson_snr_noise(-np.ones((1, 2, 2, 1)), snr=0.1), r"non-negative mean"),
        (lambda: shot_noise(np.ones((1, 2, 2, 1)), peak=0), r"peak must be a positive"),
        (lambda: gaussian_psf(np.ones((1, 2, 2, 1)), sigma=-1), r"sigma must be a positive"),
    ],
)
def test_bad_arguments_raise_helpful_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
