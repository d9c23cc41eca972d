r"""Per-image pixel normalisation, chosen by ``DataConfig.normalize`` (docs/data.md, "Bands").

Every rule maps one image's bands on their own, so no statistics are stored: training,
evaluation and prediction apply the same pure function, :func:`normalize_bands`, to images
``x`` of shape (..., C, H, W). For band :math:`x_c` of one image (:math:`H W` pixels):

.. math::

    \text{half:}\quad & (x_c - 0.5) / 0.5
        \quad\text{(the paper's; images in [0, 1] map to [-1, 1])} \\
    \text{none:}\quad & x_c \\
    \text{per\_band\_standard:}\quad & (x_c - \operatorname{mean} x_c)
        / \max(\operatorname{std} x_c,\ \epsilon_c) \\
    \text{per\_band\_minmax:}\quad & (x_c - \min x_c) / \max(\max x_c - \min x_c,\ \epsilon_c) \\
    \text{asinh:}\quad & \operatorname{arcsinh}(x_c / s_c),\qquad
        s_c = 1.4826\,\operatorname{median}|x_c - \operatorname{median} x_c|

where ``std`` is the population standard deviation, the median of an even count is the mean of
the two middle values (as ``np.median``), and the floor
:math:`\epsilon_c = \max(10^{-6} \max|x_c|,\ \text{float32 tiny})` keeps a constant band finite
(it maps to 0) whatever the units. The asinh scale :math:`s_c` is the robust (MAD) estimate
of the band's noise; when more than half the pixels are equal (MAD 0, e.g. an empty sky
padded with zeros) it falls back to :math:`\operatorname{std} x_c`, and it is floored at
:math:`\epsilon_c`. Values are computed in float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sidda.errors import InputError

__all__ = ["NORMALIZATIONS", "normalize_bands", "scale_flags"]

#: The values of ``DataConfig.normalize``, i.e. the modes of :func:`normalize_bands`.
NORMALIZATIONS = ("half", "none", "per_band_standard", "per_band_minmax", "asinh")
_MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): the MAD of a Gaussian times this is its sigma
_RELATIVE_FLOOR = 1e-6


def _floor(v: Tensor) -> Tensor:
    """Per-band floor of a scale, (..., C, 1) for pixels ``v`` (..., C, H*W)."""
    tiny = torch.finfo(torch.float32).tiny
    return (_RELATIVE_FLOOR * v.abs().amax(-1, keepdim=True)).clamp_min(tiny)


def _median(v: Tensor) -> Tensor:
    """Median over the last axis, (..., 1); the mean of the two middle values for even counts."""
    s = v.sort(dim=-1).values
    n = v.shape[-1]
    return (s[..., (n - 1) // 2 : (n - 1) // 2 + 1] + s[..., n // 2 : n // 2 + 1]) / 2


def _normalize(t: Tensor, mode: str) -> Tensor:
    if mode == "half":
        return (t - 0.5) / 0.5
    if mode == "none":
        return t
    v = t.flatten(-2)  # (..., C, H*W): each band of each image
    floor = _floor(v)
    if mode == "per_band_standard":
        std = v.std(-1, correction=0, keepdim=True)
        out = (v - v.mean(-1, keepdim=True)) / torch.maximum(std, floor)
    elif mode == "per_band_minmax":
        lo = v.amin(-1, keepdim=True)
        out = (v - lo) / torch.maximum(v.amax(-1, keepdim=True) - lo, floor)
    else:  # asinh
        scale = _MAD_TO_SIGMA * _median((v - _median(v)).abs())
        scale = torch.where(scale > floor, scale, v.std(-1, correction=0, keepdim=True))
        out = torch.asinh(v / torch.maximum(scale, floor))
    return out.reshape(t.shape)


def scale_flags(x: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Per image and band, (..., C) booleans: whether ``mode``'s scale of the band is at the
    floor eps_c of the module docstring (a constant band, or one too flat for float32), and, for
    ``asinh``, whether its MAD was 0 so that its std was used instead.

    ``half`` and ``none`` have no scale: both are False.

    >>> x = torch.stack([torch.ones(4, 4), torch.eye(4)])  # (C=2, H=4, W=4)
    >>> [f.tolist() for f in scale_flags(x, "asinh")]
    [[True, False], [True, True]]
    """
    v = x.float().flatten(-2)  # (..., C, H*W)
    floor = _floor(v)[..., 0]
    none = torch.zeros(v.shape[:-1], dtype=torch.bool)
    if mode in ("half", "none"):
        return none, none
    if mode == "per_band_standard":
        return v.std(-1, correction=0) <= floor, none
    if mode == "per_band_minmax":
        return v.amax(-1) - v.amin(-1) <= floor, none
    mad = _MAD_TO_SIGMA * _median((v - _median(v)).abs())[..., 0]
    fallback = ~(mad > floor)
    scale = torch.where(fallback, v.std(-1, correction=0), mad)
    return scale <= floor, fallback


def normalize_bands(x: Tensor | np.ndarray, mode: str) -> Tensor | np.ndarray:
    """Normalise each band of each image of ``x`` (..., C, H, W) by ``mode`` (module docstring).

    Args:
        x: Images, at least 2-D: (H, W), (C, H, W) or (N, C, H, W); a tensor or an array.
        mode: One of :data:`NORMALIZATIONS`.

    Returns:
        float32 images of the same shape, a tensor for a tensor and an array for an array.

    Raises:
        InputError: an unknown ``mode`` (the message lists the valid ones).

    >>> x = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])  # (C=1, H=2, W=2)
    >>> normalize_bands(x, "per_band_minmax").flatten().mul(3).round().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    if mode not in NORMALIZATIONS:
        raise InputError(f"unknown normalisation {mode!r}; valid values are "
                         f"{', '.join(NORMALIZATIONS)}")
    if x.ndim < 2:
        raise InputError(f"normalize_bands takes images (..., H, W), got shape {tuple(x.shape)}")
    if isinstance(x, np.ndarray):
        return _normalize(torch.from_numpy(np.asarray(x, dtype=np.float32)), mode).numpy()
    return _normalize(x.float(), mode)
