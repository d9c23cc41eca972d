r"""Synthetic source/target image sets for domain adaptation, drawn as in the SIDDA paper.

Three generators return a :class:`DomainSplits` of seeded, NHWC ``float32`` images:

- :func:`make_shapes` (:mod:`~sidda.generators.shapes`): binary lines, rectangles and
  ellipses (the authors' ``notebooks/shapes.ipynb``);
- :func:`make_astro` (:mod:`~sidda.generators.astro`): Sersic ellipticals, spirals and Moffat
  stars (the authors' ``notebooks/astronomical_objects.ipynb``);
- :func:`make_mnist_m` (:mod:`~sidda.generators.mnist_m`): real MNIST digits blended with
  natural photographs (the authors' ``notebooks/mnistm.ipynb``);
- :func:`make_dataset` (:mod:`~sidda.generators.registry`) picks one by name.

The source domain holds the clean images. The target domain holds images corrupted by one of
three shifts (:mod:`~sidda.generators.shifts`, whose docstring has their formulas), each a
pure function of NHWC arrays.

Two protocols decide which images the domains share:

- ``"paper"`` reproduces the paper: the target is the shifted copy of the *same* base images,
  split once with one index for both domains, so ``x_test_t[i]`` is the shifted
  ``x_test_s[i]``. Every test image's content is therefore in the other domain's test set too.
- ``"clean"`` (the default) draws disjoint base images for the source and the target, and for
  train and test, so no test image's content was seen in training by either domain.

Every random number comes from ``np.random.default_rng`` streams seeded by ``random_state``;
the global NumPy RNG is neither read nor changed (deepbench draws default arguments from it at
import time, so its import is wrapped to restore the global state). Class balance holds in every
split: each class has exactly ``n_train_per_class`` training and ``n_test_per_class`` test
images, and each split is shuffled (:mod:`~sidda.generators._common`).
"""

from sidda.generators._common import PROTOCOLS, SHIFTS, DomainSplits
from sidda.generators.astro import make_astro
from sidda.generators.mnist_m import MNIST_M_BACKGROUNDS, make_mnist_m
from sidda.generators.registry import DATASET_NAMES, make_dataset
from sidda.generators.shapes import make_shapes
from sidda.generators.shifts import gaussian_psf, poisson_snr_noise, shot_noise

__all__ = [
    "DATASET_NAMES",
    "MNIST_M_BACKGROUNDS",
    "PROTOCOLS",
    "SHIFTS",
    "DomainSplits",
    "gaussian_psf",
    "make_astro",
    "make_dataset",
    "make_mnist_m",
    "make_shapes",
    "poisson_snr_noise",
    "shot_noise",
]
