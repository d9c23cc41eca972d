"""Draw a synthetic set by name: :func:`make_dataset` (``sidda data make``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from sidda.errors import InputError
from sidda.generators._common import SHIFTS, DomainSplits, RandomState
from sidda.generators.astro import make_astro
from sidda.generators.mnist_m import make_mnist_m
from sidda.generators.shapes import make_shapes

__all__ = ["DATASET_NAMES", "make_dataset"]

DATASET_NAMES = ("shapes", "astro", "mnist-m")
_ALIASES = {"astro-objects": "astro", "mnistm": "mnist-m"}


_MAKERS: dict[str, Callable[..., DomainSplits]] = {
    "shapes": make_shapes, "astro": make_astro, "mnist-m": make_mnist_m,
}


def make_dataset(
    name: str,
    n_per_class: int,
    *,
    protocol: str = "clean",
    shift: str | None = None,
    random_state: RandomState = None,
    **options: Any,
) -> DomainSplits:
    """Draw a named synthetic set: ``"shapes"``, ``"astro"`` or ``"mnist-m"``.

    Args:
        name: Dataset name; ``"astro_objects"`` and ``"mnist_m"`` (the paper's keys) also work.
        n_per_class: Base images per class and domain.
        protocol: ``"clean"`` or ``"paper"``.
        shift: Target shift; ``None`` picks the default (``"noise"``). Shapes and astro only
            have ``"noise"``; mnist-m also has ``"psf"``.
        random_state: Seed or generator.
        **options: Further keyword options of the generator, e.g. ``test_fraction``, ``snr``
            or ``image_size``.

    Returns:
        The generator's :class:`DomainSplits`.

    Raises:
        ValueError: On an unknown name, shift or option.

    Example:
        >>> make_dataset("shapes", 2, image_size=20, random_state=0).x_train_t.shape
        (3, 20, 20, 1)
    """
    key = str(name).lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _MAKERS:
        raise InputError(f"unknown dataset name {name!r}; valid names are {DATASET_NAMES}")
    valid_shifts = SHIFTS[key]
    if shift is not None and shift not in valid_shifts:
        raise InputError(f"shift {shift!r} is not available for {key!r}; valid shifts are "
                         f"{valid_shifts} (or None for {valid_shifts[0]!r})")
    maker = _MAKERS[key]
    allowed = set(inspect.signature(maker).parameters) - {"n_per_class", "protocol", "shift",
                                                          "random_state"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for {key!r}; valid options are "
                         f"{sorted(allowed)}")
    if key == "mnist-m":
        options["shift"] = shift or valid_shifts[0]
    return maker(n_per_class, protocol=protocol, random_state=random_state, **options)
