"""What every generator shares: the result type, argument checks, seeding and the splits.

- :class:`DomainSplits`: the eight arrays of a source/target, train/test data set;
- ``_check_*``: argument checks that raise :class:`~sidda.errors.InputError` saying the fix;
- :func:`stratified_split`: the one stratified, seeded train/test split (also used by
  :func:`sidda.datasets.import_image_folders`);
- ``_make_splits``: draw base images, split them per protocol and shift the target.

Two protocols decide which images the domains share:

- ``"paper"`` reproduces the paper: the target is the shifted copy of the *same* base images,
  split once with one index for both domains, so ``x_test_t[i]`` is the shifted
  ``x_test_s[i]``;
- ``"clean"`` (the default) draws disjoint base images for the source and the target, and for
  train and test.

Every random number comes from ``np.random.default_rng`` streams seeded by ``random_state``;
the global NumPy RNG is neither read nor changed.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from sidda.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["PROTOCOLS", "SHIFTS", "DomainSplits", "stratified_split"]

PROTOCOLS = ("paper", "clean")
SHIFTS = {"shapes": ("noise",), "astro": ("noise",), "mnist-m": ("noise", "psf")}
_DATA_HINT = "install the data extra: pip install 'sidda[data]'"
RandomState = int | np.random.Generator | None


#: Largest image side a generator draws (the models take at most this; sidda.datasets).
_MAX_IMAGE_SIZE = 1024


@dataclass(frozen=True, eq=False)
class DomainSplits:
    """Train/test splits of a source and a target domain.

    Images are ``(N, H, W, C)`` float32 (``C = 1`` for shapes and astro, 3 for MNIST-M) and
    labels ``(N,)`` int64 in ``[0, len(class_names))``. Target labels are generated too; they
    are for evaluation only.

    Attributes:
        x_train_s: Source training images, ``(N_train, H, W, C)``.
        y_train_s: Source training labels, ``(N_train,)``.
        x_test_s: Source test images, ``(N_test, H, W, C)``.
        y_test_s: Source test labels, ``(N_test,)``.
        x_train_t: Target training images, ``(N_train, H, W, C)``.
        y_train_t: Target training labels, ``(N_train,)``.
        x_test_t: Target test images, ``(N_test, H, W, C)``.
        y_test_t: Target test labels, ``(N_test,)``.
        class_names: Name of each label, indexed by label.
        params: JSON-serialisable record of every generation parameter: ``generator``,
            ``protocol``, ``shift``, ``seed`` (passing it back as ``random_state`` reproduces
            the arrays) and the drawing ranges.
    """

    x_train_s: np.ndarray
    y_train_s: np.ndarray
    x_test_s: np.ndarray
    y_test_s: np.ndarray
    x_train_t: np.ndarray
    y_train_t: np.ndarray
    x_test_t: np.ndarray
    y_test_t: np.ndarray
    class_names: tuple[str, ...]
    params: dict

    def __repr__(self) -> str:
        """Summarise by generator, protocol, shift and shapes instead of printing arrays."""
        return (
            f"DomainSplits({self.params.get('generator')!r}, protocol="
            f"{self.params.get('protocol')!r}, shift={self.params.get('shift')!r}, "
            f"train={self.x_train_s.shape}, test={self.x_test_s.shape}, "
            f"classes={self.class_names})"
        )


def _check_int(value: Any, name: str, *, minimum: int, hint: str,
               maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}; {hint}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be an integer <= {maximum}, got {value!r}; {hint}")
    return int(value)


def _check_open_unit(value: Any, name: str, *, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise InputError(f"{name} must be a number in the open interval (0, 1), got {value!r}; "
                         f"{hint}")
    return float(value)


def _check_protocol(protocol: Any) -> str:
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}; use 'clean' "
                         "for disjoint base images or 'paper' to reproduce the paper")
    return protocol


def _check_images(images: Any, name: str) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} expects a numeric NHWC array (N, H, W, C), got dtype "
                         f"{arr.dtype} and shape {arr.shape}; add axes with x[None] for one "
                         "image or x[..., None] for a missing channel axis")
    return arr.astype(np.float64, copy=False)


def _check_random_state(random_state: Any) -> np.random.Generator:
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise InputError(f"random_state must be a non-negative int, got {random_state}; "
                             "pass e.g. random_state=0")
        return np.random.default_rng(int(random_state))
    raise InputError(f"random_state must be an int, a np.random.Generator or None, got "
                     f"{type(random_state).__name__}; pass an int seed or "
                     "np.random.default_rng(seed)")


def _resolve_seed(random_state: Any) -> int:
    """Turn ``random_state`` into one int seed that reproduces the whole draw."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    rng = _check_random_state(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(rng.integers(0, 2**63))  # advances the caller's generator, as sklearn does
    return int(random_state)


def _split_sizes(n_per_class: int, test_fraction: float) -> tuple[int, int]:
    # ceil like sklearn's train_test_split; the epsilon keeps 0.1 * 30 from becoming 4.
    n_test = math.ceil(test_fraction * n_per_class - 1e-9)
    if n_test >= n_per_class:
        raise InputError(f"test_fraction={test_fraction} leaves no training image with "
                         f"n_per_class={n_per_class} ({n_test} test images per class); lower "
                         "test_fraction or raise n_per_class")
    return n_per_class - n_test, n_test


@functools.cache
def _import_optional(module: str) -> ModuleType:
    """Import a data-extra module, restoring the global NumPy RNG that deepbench advances."""
    state = np.random.get_state()
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is needed to draw this dataset; {_DATA_HINT}") from err
    finally:
        np.random.set_state(state)


def stratified_split(
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    n_test: int | None = None,
    test_fraction: float | None = None,
    where: object = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, test) indices of ``labels`` (N,), split per class.

    Each class gets ``n_test`` test items, or, with ``test_fraction`` f, ``clip(ceil(n f), 1,
    n - 1)`` of its n items (ceil, as scikit-learn's ``train_test_split``; the epsilon keeps
    0.1 * 30 from becoming 4). The random numbers drawn: one permutation per class in label
    order, then one of the train and one of the test indices.

    Raises:
        InputError: a class with fewer than 2 items (``where`` names the data).

    >>> tr, te = stratified_split(np.array([0, 0, 0, 1, 1]), np.random.default_rng(0),
    ...                           test_fraction=0.2)
    >>> sorted(tr.tolist() + te.tolist()), len(te)
    ([0, 1, 2, 3, 4], 2)
    """
    if (n_test is None) == (test_fraction is None):
        raise TypeError("pass exactly one of n_test and test_fraction")
    train, test = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if len(idx) < 2:
            name = f"class {int(k)}" if k >= 0 else "the folder"
            raise InputError(
                f"{where}: {name} has {len(idx)} image; each class needs at least 2 (one for "
                "training, one for testing)"
            )
        n = n_test if n_test is not None else min(
            max(math.ceil(len(idx) * test_fraction - 1e-9), 1), len(idx) - 1)
        test.append(idx[:n])
        train.append(idx[n:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _make_splits(
    draw: Callable[[str, np.random.Generator], tuple[np.ndarray, np.ndarray]],
    shift: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    *,
    n_test: int,
    protocol: str,
    seed: int,
    class_names: tuple[str, ...],
    params: dict,
) -> DomainSplits:
    """Draw base images, split them per protocol and shift the target.

    ``draw(domain, rng)`` returns ``(images (N, H, W, C), labels (N,))`` for ``domain`` in
    ``{"source", "target"}``. Four independent streams are spawned from ``seed``: source
    images, target images, splits and shift noise.
    """
    start = time.perf_counter()
    rng_s, rng_t, rng_split, rng_shift = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    x_s, y_s = draw("source", rng_s)
    train_s, test_s = stratified_split(y_s, rng_split, n_test=n_test)
    if protocol == "paper":  # target = shifted copy of the same images, same split and order
        x_t, y_t, train_t, test_t = x_s, y_s, train_s, test_s
    else:
        x_t, y_t = draw("target", rng_t)
        train_t, test_t = stratified_split(y_t, rng_split, n_test=n_test)
    splits = DomainSplits(
        x_train_s=x_s[train_s].astype(np.float32),
        y_train_s=y_s[train_s].astype(np.int64),
        x_test_s=x_s[test_s].astype(np.float32),
        y_test_s=y_s[test_s].astype(np.int64),
        x_train_t=shift(x_t[train_t], rng_shift),
        y_train_t=y_t[train_t].astype(np.int64),
        x_test_t=shift(x_t[test_t], rng_shift),
        y_test_t=y_t[test_t].astype(np.int64),
        class_names=class_names,
        params={**params, "protocol": protocol, "seed": seed, "class_names": list(class_names)},
    )
    logger.info("drew %r in %.2f s", splits, time.perf_counter() - start)
    return splits


def _common_params(generator: str, shift: str, n_per_class: int, test_fraction: float,
                   image_size: int) -> dict:
    n_train, n_test = _split_sizes(n_per_class, test_fraction)
    return {"generator": generator, "shift": shift, "n_per_class": n_per_class,
            "n_train_per_class": n_train, "n_test_per_class": n_test,
            "test_fraction": test_fraction, "image_size": image_size}


def _scaled(value: float, image_size: int) -> int:
    """Scale a pixel range end drawn for a 100-px image to ``image_size`` pixels."""
    return int(round(value * image_size / 100))
