"""The paper's classifiers: a plain CNN and C_N / D_N-equivariant CNNs (escnn).

Every model maps images (B, C, H, W) to ``(latent, logits)``: ``latent`` (B, 256) is the
LayerNorm output of the first fully connected layer, the space in which SIDDA aligns the
domains, and ``logits`` (B, K) the classifier output. Architecture (the authors' ``models.py``)::

    conv k5 p2 -> BN -> ReLU -> maxpool 2 -> dropout 0.2        8 fields
    conv k3 p1 -> BN -> ReLU -> maxpool 2 -> dropout 0.2       16 fields
    conv k3 p1 -> BN -> ReLU -> maxpool 2 -> dropout 0.2       32 fields
    [equivariant models: max over each regular field (group pooling) -> 32 channels]
    flatten -> fc1 (-> 256, N(0, 0.005)) -> LayerNorm = latent -> fc2 (-> K, N(0, 0.01))

For ``d<N>`` and ``c<N>`` each of the 8/16/32 fields is a regular representation of the group
(2N resp. N channels), so a D4 model has 64, 128 and 256 channels.

Where equivariance holds, and where it does not:

* Only the feature maps up to the group pooling are equivariant (:meth:`features`); the
  flatten + fc1 head sees a spatial map, so the logits are **not** rotation invariant.
* On a pixel grid only rotations by multiples of 90 degrees (and flips) are exact.
* Max-pooling with stride 2 commutes with a 90-degree rotation only if every pooled map has an
  even size. 32 -> 16 -> 8 -> 4 is exact; the paper's 100 -> 50 -> 25 -> 12 is not: the odd
  25-pixel map loses its last row and column, which a rotation moves to the other side.
  :func:`is_exactly_equivariant_size` says which input sizes are exact.

Names: ``cnn``; ``c<N>`` (rotations by 2 pi/N, ``c1`` the trivial group); ``d<N>`` (rotations
and a reflection, order 2N; ``d1`` is the reflection group of order 2, not the trivial group
that the authors' code builds for N = 1), with 1 <= N <= 16 (:data:`MAX_GROUP_ORDER`).

Speed on the CPU: the models compute their blocks on a fused channels-last fast path (the
comment above ``_BlockTail`` says how; ``model.fused = False`` runs the modules one by one),
the same function with far fewer passes over the activation maps, and the parameter names and
``state_dict`` layout of the modules. :func:`prepare_for_training` also tunes glibc's malloc
(:func:`tune_cpu_allocator`). Figures: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import math
import platform
import re
import sys
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from sidda.datasets import MAX_IMAGE_SIZE
from sidda.errors import InputError, short_repr

__all__ = [
    "CNN",
    "EquivariantCNN",
    "MAX_GROUP_ORDER",
    "ModelConfig",
    "build_model",
    "export_model",
    "is_exactly_equivariant_size",
    "model_state",
    "parse_model_name",
    "prepare_for_training",
    "tune_cpu_allocator",
]

logger = logging.getLogger(__name__)

WIDTHS = (8, 16, 32)
KERNELS = (5, 3, 3)
N_POOLS = len(WIDTHS)
_NAME = re.compile(r"^(cnn|[cd](\d{1,6}))$")
#: Largest group order N of ``c<N>`` and ``d<N>``: escnn's cost grows with N (d1000 takes many
#: minutes only to build) and the paper goes up to d8.
MAX_GROUP_ORDER = 16


@dataclass(frozen=True)
class ModelConfig:
    """Model options; channels, classes and image size come from the data.

    Attributes:
        name: ``cnn``, ``c<N>`` or ``d<N>`` with 1 <= N <= 16.
        dropout: Dropout probability after each block.
        latent_dim: Width of the latent (LayerNorm) layer.
    """

    name: str = "cnn"
    dropout: float = 0.2
    latent_dim: int = 256

    def __post_init__(self) -> None:
        parse_model_name(self.name)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout}")
        if self.latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {self.latent_dim}")


def parse_model_name(name: str) -> tuple[str, int]:
    """Split a model name into its kind (``cnn``, ``c``, ``d``) and group order parameter N.

    >>> parse_model_name("d4")
    ('d', 4)
    >>> parse_model_name("cnn")
    ('cnn', 0)
    """
    m = _NAME.match(str(name).strip().lower())
    if m is None or (m.group(2) is not None and not 1 <= int(m.group(2)) <= MAX_GROUP_ORDER):
        raise InputError(
            f"unknown model {short_repr(name)}; use 'cnn', 'c<N>' (rotations, e.g. c4) or "
            f"'d<N>' (rotations and flips, e.g. d4) with 1 <= N <= {MAX_GROUP_ORDER}"
        )
    if m.group(1) == "cnn":
        return "cnn", 0
    return m.group(1)[0], int(m.group(2))


def is_exactly_equivariant_size(image_size: int) -> bool:
    """Whether every max-pooled map is of even size, so that 90-degree rotations are exact.

    >>> is_exactly_equivariant_size(32), is_exactly_equivariant_size(100)
    (True, False)
    """
    size = int(image_size)
    for _ in range(N_POOLS):
        if size % 2:
            return False
        size //= 2
    return True


def _check_image_size(image_size: int) -> None:
    if int(image_size) > MAX_IMAGE_SIZE:
        raise InputError(
            f"image size {image_size} is larger than the models take (at most "
            f"{MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}); resize the images (data.image_size)"
        )
    if int(image_size) < 2**N_POOLS:
        raise InputError(
            f"image size {image_size} is too small for the model: it pools by 2 three times, so "
            f"images must be at least {2**N_POOLS}x{2**N_POOLS}; resize them (data.image_size)"
        )


# ---------------------------------------------------------------------------------------------
# CPU fast path of the blocks  conv -> BatchNorm -> ReLU -> maxpool 2 -> dropout
#
# On the CPU a training step is dominated by memory traffic on the full-size activation maps
# between a convolution and its pooling, not by the convolutions. The fast path computes the
# same function with fewer passes over them:
#
# * channels-last memory, mkldnn's fast layout (one-channel images get explicit NHWC strides,
#   otherwise mkldnn falls back to NCHW for the whole stack);
# * with batch statistics, BatchNorm is the per-channel affine map  c -> a c + b  (a = gamma /
#   sigma), and max-pooling commutes with increasing maps, so
#   ``maxpool(relu(a c + b)) = relu(a maxpool(c) + b)`` for a >= 0, and the same with the
#   minimum, ``-maxpool(-c)``, for a < 0. Only the statistics and the pooling read the full map;
#   the affine map, the ReLU and the dropout run on the pooled map, a quarter of the size;
# * the backward pass is written out: one pass over the full map, ``a G + alpha c + beta`` with
#   G the pooled gradient scattered back to the maxima, instead of the four of the modules;
# * dropout masks come from 16-bit random integers, four per 64-bit draw, instead of one float
#   per element. The drop probability is rounded to a multiple of 2**-16 (0.2 -> 0.199997) and
#   the kept values are scaled by 1 / (1 - p) of that probability.
#
# Outputs, gradients and running statistics agree with the plain modules to float rounding
# (tests/test_models.py; exactly in float64). In float32 a rounding-level tie in a ReLU or a
# max-pool window can route one gradient entry differently, as it does between torch's own NCHW
# and channels-last kernels.
# ---------------------------------------------------------------------------------------------

_DROP_BITS = 16  # bits per dropout decision


def _channels_last(x: Tensor) -> Tensor:
    """``x`` (B, C, H, W) with NHWC strides (a view when it already has them or C == 1)."""
    b, c, h, w = x.shape
    if x.stride() == (c * h * w, 1, c * w, c):
        return x
    if c == 1:  # NCHW and NHWC hold the same bytes; only the strides tell mkldnn the layout
        return x.contiguous().as_strided(x.shape, (h * w, 1, w, 1))
    return x.contiguous(memory_format=torch.channels_last)


def _rows(t: Tensor) -> Tensor:
    """A channels-last (B, C, H, W) tensor as the (B*H, W*C) matrix it is in memory (a view)."""
    b, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(b * h, w * c)


def _unrows(r: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    """Inverse of :func:`_rows`: (B*H, W*C) -> channels-last (B, C, H, W), a view."""
    b, c, h, w = shape
    return r.view(b, h, w, c).permute(0, 3, 1, 2)


def _field_sum(r: Tensor, channels: int, group: int) -> Tensor:
    """Sum of a (B*H, W*C) matrix per field of ``group`` consecutive channels: (C / group,)."""
    s = r.sum(0).view(-1, channels).sum(0)  # (C,)
    return s if group == 1 else s.view(-1, group).sum(1)


def _field_dot(u: Tensor, v: Tensor, channels: int, group: int) -> Tensor:
    """Per-field sum of ``u * v`` for two (B*H, W*C) matrices, in row chunks of about 4 MiB so
    that the product never needs a full-size temporary."""
    rows = max(1, (4 << 20) // (u.shape[1] * u.element_size()))
    total = None
    for a, b in zip(u.split(rows), v.split(rows), strict=True):
        part = (a * b).sum(0)
        total = part if total is None else total.add_(part)
    return _field_sum(total.unsqueeze(0), channels, group)


def _row_vector(v: Tensor, group: int, width: int) -> Tensor:
    """Per-field values (F,) as a (width * F * group,) row matching :func:`_rows`."""
    return (v.repeat_interleave(group) if group > 1 else v).repeat(width)


def _keep_mask(shape: tuple[int, ...], p: float) -> tuple[Tensor | None, float]:
    """Dropout keep-mask (uint8, ``shape``) and the scale of the kept values.

    Bernoulli(1 - p') decisions from 16-bit uniform integers, four per 64-bit draw of the
    global torch generator; p' is p rounded to a multiple of 2**-16.
    """
    full = 2**_DROP_BITS
    threshold = round(p * full)
    if threshold <= 0:
        return None, 1.0
    if threshold >= full:
        return torch.zeros(shape, dtype=torch.uint8), 0.0
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    r = bits.view(torch.int16)[:n]  # uniform on [-2**15, 2**15)
    return r.ge(threshold - full // 2).view(torch.uint8).view(shape), full / (full - threshold)


def _conv_output_mean(x: Tensor, weight: Tensor, bias: Tensor | None, padding) -> Tensor:
    """Batch mean per channel of ``conv2d(x, weight, bias, padding)`` (stride 1), from the input.

    The convolution is linear, so its mean is ``bias + sum_{i,u,v} W[:, i, u, v] S[i, u, v] / n``
    with S the sum of the input over the window that the tap (u, v) sees, read off 2-D prefix
    sums of ``x.sum(0)``: one pass over the input instead of one over the (larger) output.
    Float64; no gradient. x (B, C_in, H, W) -> (C_out,).
    """
    pad = padding if isinstance(padding, int) else padding[0]
    b, c, h, w = x.shape
    k = weight.shape[-1]
    h_out, w_out = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    with torch.no_grad():
        # sum over the batch as the (B, H*W*C) matrix x is in memory (x.sum(0) is slow on it)
        xs = _rows(_channels_last(x)).view(b, -1).sum(0).view(h, w, c)
        xs = xs.permute(2, 0, 1).double()  # (C_in, H, W)
        prefix = F.pad(xs.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (C_in, H+1, W+1)
        taps = torch.arange(k, device=x.device) - pad
        r0, r1 = taps.clamp(0, h), (taps + h_out).clamp(0, h)  # rows seen by tap u: [r0, r1)
        c0, c1 = taps.clamp(0, w), (taps + w_out).clamp(0, w)
        s = (prefix[:, r1[:, None], c1] - prefix[:, r0[:, None], c1]
             - prefix[:, r1[:, None], c0] + prefix[:, r0[:, None], c0])  # (C_in, k, k)
        mean = torch.einsum("oiuv,iuv->o", weight.detach().double(), s) / (b * h_out * w_out)
        if bias is not None:
            mean += bias.detach().double()
    return mean


class _BlockTail(torch.autograd.Function):
    """``dropout(maxpool2(relu(batchnorm(c))))`` with batch statistics, channels-last.

    ``c`` (B, C, H, W) must be centred: each field's batch mean is zero (the convolution runs
    with its bias minus the mean, :func:`_conv_output_mean`), so the variance is one pass of
    squares and ``BatchNorm(c) = slope c + beta``. BatchNorm statistics, gamma and beta are
    shared by fields of ``group`` consecutive channels (escnn's InnerBatchNorm; ``group`` 1 is
    nn.BatchNorm2d). ``keep`` is the uint8 dropout mask of the pooled map in :func:`_rows`
    layout, or None, and ``scale`` the dropout scale. Returns the output and the biased batch
    variance per field.
    """

    @staticmethod
    def forward(ctx, c, gamma, beta, keep, group, eps, scale):  # noqa: D102
        b, ch, h, w = c.shape
        w2 = w // 2
        n = b * h * w * group  # values behind each statistic
        cr = _rows(c)  # (B*H, W*C)
        var = _field_dot(cr, cr, ch, group) / n  # (F,)
        invstd = torch.rsqrt(var + eps)
        slope = gamma * invstd  # (F,)  BatchNorm = slope * c + beta
        a = slope.repeat_interleave(group) if group > 1 else slope  # (C,)
        if bool((a < 0).any()):  # decreasing channels pool their minimum, -max(-c)
            sign = torch.where(a < 0, -1.0, 1.0).to(c.dtype)
            p, idx = F.max_pool2d(_unrows(cr * sign.repeat(w), c.shape), 2, 2,
                                  return_indices=True)
            pr = _rows(_channels_last(p)) * sign.repeat(w2)
        else:
            p, idx = F.max_pool2d(c, 2, 2, return_indices=True)
            pr = _rows(_channels_last(p))  # (B*H/2, W/2*C): the selected values of c
        out = torch.addcmul(_row_vector(beta * scale, group, w2), pr,
                            _row_vector(slope * scale, group, w2)).relu_()
        if keep is not None:
            out.mul_(keep)
        y = _unrows(out, (b, ch, h // 2, w2))
        ctx.save_for_backward(c, _channels_last(idx), pr, y, invstd, slope)
        ctx.group, ctx.scale = group, scale
        ctx.mark_non_differentiable(var)
        return y, var

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, _g_var):  # noqa: D102
        c, idx, pr, y, invstd, slope = ctx.saved_tensors
        group, scale = ctx.group, ctx.scale
        b, ch, h, w = c.shape
        w2 = w // 2
        n = b * h * w * group
        # d loss / d out, where the ReLU and the dropout let it through (out > 0)
        g = torch.ops.aten.threshold_backward(_rows(_channels_last(g_y)), _rows(y), 0)
        d_beta = _field_sum(g, ch, group) * scale  # sum of dL/dBN over the map (F,)
        d_gamma = _field_dot(g, pr, ch, group) * (invstd * scale)  # sum of dL/dBN * xhat
        d_c = None
        if ctx.needs_input_grad[0]:
            # dL/dc = slope (G - d_beta / n - xhat d_gamma / n) = slope G + alpha c + beta,
            # G = dL/dBN scattered to the maxima, xhat = c invstd (c is centred)
            alpha = -slope * invstd * d_gamma / n
            beta = -slope * d_beta / n
            d_c = torch.addcmul(_row_vector(beta, group, w), _rows(c), _row_vector(alpha, group, w))
            g.mul_(_row_vector(slope * scale, group, w2))
            # channels-last memory is (B, H*W, C): the pooling indices (row * W + col) address
            # dimension 1 directly
            where = idx.permute(0, 2, 3, 1).view(b, -1, ch)  # (B, H/2*W/2, C)
            d_c.view(b, h * w, ch).scatter_add_(1, where, g.view(b, -1, ch))
            d_c = _unrows(d_c, c.shape)
        return d_c, d_gamma, d_beta, None, None, None, None


@torch.no_grad()
def _update_running_stats(bn: nn.Module, mean: Tensor, var: Tensor, n: int) -> None:
    """What nn.BatchNorm does with the batch statistics in training mode."""
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
    bn.running_var.lerp_((var * (n / max(n - 1, 1))).to(bn.running_var.dtype), momentum)


def _fused_block(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding, bn: nn.Module, drop: float,
    *, group: int = 1,
) -> Tensor:
    """One block on the fast path: x (B, C_in, H, W) channels-last -> (B, C, H/2, W/2).

    ``bn`` is the BatchNorm module holding gamma, beta and the running statistics (one entry
    per field of ``group`` channels); ``drop`` the dropout probability in force (0 when the
    dropout module is in eval mode).
    """
    if bn.training or not bn.track_running_stats:  # batch statistics
        mean = _conv_output_mean(x, weight, bias, padding)  # (C,) float64
        if group > 1:
            mean = mean.view(-1, group).mean(1)  # (F,) fields share their statistics
        centre = (mean.repeat_interleave(group) if group > 1 else mean).to(x.dtype)
        c = F.conv2d(x, weight, -centre if bias is None else bias - centre, padding=padding)
        b, ch, h, w = c.shape  # (B, C, H, W), channels-last, zero batch mean per field
        keep, scale = _keep_mask((b * (h // 2), (w // 2) * ch), drop) if drop > 0 else (
            None, 1.0)
        y, var = _BlockTail.apply(c, bn.weight, bn.bias, keep, group, bn.eps, scale)
        if bn.training and bn.track_running_stats:
            _update_running_stats(bn, mean, var, b * h * w * group)
        return y
    # running statistics: a fixed affine map per channel, pooled first all the same
    c = F.conv2d(x, weight, bias, padding=padding)
    b, ch, h, w = c.shape
    slope = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * slope
    if group > 1:
        slope, shift = slope.repeat_interleave(group), shift.repeat_interleave(group)
    sign = torch.where(slope < 0, -1.0, 1.0).to(c.dtype).view(1, ch, 1, 1)
    p = F.max_pool2d(c * sign, 2, 2) * sign
    out = torch.relu(p * slope.view(1, ch, 1, 1) + shift.view(1, ch, 1, 1))
    if drop > 0:
        keep, scale = _keep_mask((b * (h // 2), (w // 2) * ch), drop)
        out = _unrows(_rows(_channels_last(out)) * keep * scale, out.shape)
    return out


def _plain_blocks_fused(blocks: nn.Sequential, x: Tensor) -> Tensor:
    """Conv2d-BatchNorm2d-ReLU-MaxPool2d-Dropout blocks (the CNN, an exported escnn model) on
    the fast path: x (B, C, H, W) -> channels-last (B, C', H/8, W/8)."""
    x = _channels_last(x)
    for i in range(0, len(blocks), 5):
        conv, bn, drop = blocks[i], blocks[i + 1], blocks[i + 4]
        x = _fused_block(x, conv.weight, conv.bias, conv.padding, bn,
                         drop.p if drop.training else 0.0)
    return x


def _field_max(x: Tensor, group: int) -> Tensor:
    """Group pooling: the max over each field of ``group`` consecutive channels, channels-last
    (B, C, h, w) -> (B, C / group, h, w)."""
    b, c, h, w = x.shape
    z = _channels_last(x).permute(0, 2, 3, 1).reshape(b, h, w, c // group, group).max(-1).values
    return z.permute(0, 3, 1, 2)


def _use_fast_path(model: nn.Module, x: Tensor) -> bool:
    return (
        getattr(model, "fused", True)
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and min(x.shape[2:]) >= 2
    )


_allocator_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed large buffers in glibc's heap instead of handing them back to the kernel.

    glibc serves every buffer above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
    and unmaps it on ``free``, so each training step page-faults its large activation maps in
    again: a third of the CPU time of the authors' scripts is this system time. This sets
    ``M_MMAP_MAX = 0`` and ``M_TRIM_THRESHOLD`` to its maximum for the whole process; freed
    memory is reused by the next step and is not returned to the OS before the process ends.
    Linux with glibc only; elsewhere it does nothing.

    Returns:
        Whether the setting is in force.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 2**31 - 1) == 1  # MMAP_MAX, TRIM
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return False
    _allocator_tuned = bool(ok)
    if ok:
        logger.debug("glibc malloc: large buffers stay in the heap (M_MMAP_MAX=0, no trim)")
    return _allocator_tuned


def prepare_for_training(
    model: nn.Module,
    *,
    device: str | torch.device = "cpu",
    fused: bool | None = None,
    compile: bool = False,
    tune_allocator: bool = True,
) -> nn.Module:
    """Move ``model`` to ``device`` and switch on the fast CPU settings; returns the model to train.

    Args:
        model: A model of :func:`build_model` (or any module; the options then do what applies).
        device: Training device.
        fused: Use the fused channels-last blocks on the CPU (same function, fewer passes over
            the activation maps; see the comment above ``_BlockTail`` in ``sidda/models.py``);
            None keeps the model's ``fused`` attribute (True when built).
        compile: Wrap the model in ``torch.compile`` (measured slower on the CPU, plus 30-100 s
            of compilation; off by default). The returned module then differs from ``model``,
            which keeps the weights.
        tune_allocator: On the CPU, call :func:`tune_cpu_allocator`.

    >>> m = prepare_for_training(build_model("cnn", in_channels=1, num_classes=3, image_size=32))
    >>> m.fused
    True
    """
    device = torch.device(device)
    model.to(device)
    base = _unwrap(model)
    if fused is not None:
        base.fused = bool(fused)
    if device.type == "cpu" and tune_allocator:
        tune_cpu_allocator()
    if compile:
        return torch.compile(model)
    return model


class _Head(nn.Module):
    """flatten -> fc1 -> LayerNorm (latent) -> fc2 (logits), with the paper's init."""

    def __init__(self, in_features: int, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, latent_dim)
        self.norm = nn.LayerNorm(latent_dim)
        self.fc2 = nn.Linear(latent_dim, num_classes)
        nn.init.normal_(self.fc1.weight, 0.0, 0.005)
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor]:
        z = self.norm(self.fc1(f.flatten(1)))  # (B, C*h*w) -> (B, D)
        return z, self.fc2(z)  # (B, D), (B, K)


class _Classifier(nn.Module):
    """Shared forward: ``features`` (B, 32, h, w) then the head."""

    head: _Head

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) -> latent (B, D), logits (B, K)."""
        return self.head(self.features(x))

    def _flat_size(self, in_channels: int, image_size: int) -> int:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            f = self.features(torch.zeros(1, in_channels, image_size, image_size))
        self.train(was_training)
        return f[0].numel()


class CNN(_Classifier):
    """The paper's plain CNN baseline."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dropout: float = 0.2,
        latent_dim: int = 256,
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        layers: list[nn.Module] = []
        c_in = in_channels
        for width, k in zip(WIDTHS, KERNELS, strict=True):
            layers += [
                nn.Conv2d(c_in, width, k, padding=k // 2),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, 2),
                nn.Dropout(dropout),
            ]
            c_in = width
        self.blocks = nn.Sequential(*layers)
        self.fused = True  # the CPU fast path (see _BlockTail); False runs the modules as listed
        self.head = _Head(self._flat_size(in_channels, image_size), latent_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> feature maps (B, 32, H/8, W/8)."""
        if not _use_fast_path(self, x):
            return self.blocks(x)
        return _plain_blocks_fused(self.blocks, x)  # (B, 32, H/8, W/8), channels-last


def _escnn():
    """Import escnn with the workaround for escnn issue #112 (cold basis cache)."""
    import escnn.group._numerical as numerical
    from escnn import gspaces
    from escnn import nn as enn

    numerical.randomized_svd = None
    return gspaces, enn


class EquivariantCNN(_Classifier):
    """The paper's escnn classifier for the group C_N (``dihedral=False``) or D_N.

    Args:
        n: Group order parameter N >= 1.
        dihedral: D_N (rotations and reflections) if True, else C_N.
        in_channels: Image channels.
        num_classes: Number of classes K.
        image_size: Input height = width.
        dropout: Dropout probability.
        latent_dim: Width of the latent layer.
    """

    def __init__(
        self,
        n: int,
        *,
        dihedral: bool,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dropout: float = 0.2,
        latent_dim: int = 256,
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        gspaces, enn = _escnn()
        if dihedral:
            gspace = gspaces.flipRot2dOnR2(N=n)
        elif n == 1:
            gspace = gspaces.trivialOnR2()
        else:
            gspace = gspaces.rot2dOnR2(N=n)
        self.gspace = gspace
        self.in_type = enn.FieldType(gspace, in_channels * [gspace.trivial_repr])
        modules = []
        t_in = self.in_type
        for width, k in zip(WIDTHS, KERNELS, strict=True):
            t_out = enn.FieldType(gspace, width * [gspace.regular_repr])
            modules += [
                enn.R2Conv(t_in, t_out, kernel_size=k, padding=k // 2),
                enn.InnerBatchNorm(t_out),
                enn.ReLU(t_out, inplace=True),
                enn.PointwiseMaxPool2D(t_out, kernel_size=2, stride=2),
                enn.PointwiseDropout(t_out, p=dropout),
            ]
            t_in = t_out
        self.blocks = enn.SequentialModule(*modules)
        self.pool = enn.GroupPooling(t_in)
        self.field_size = gspace.regular_repr.size  # channels per regular field: 2N, N or 1
        self.fused = True  # the CPU fast path in training mode (see _BlockTail)
        self.head = _Head(self._flat_size(in_channels, image_size), latent_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> group-pooled feature maps (B, 32, H/8, W/8), equivariant."""
        if self.training and _use_fast_path(self, x):
            return self._fused_features(x)
        from escnn.nn import GeometricTensor

        return self.pool(self.blocks(GeometricTensor(x, self.in_type))).tensor

    def _fused_features(self, x: Tensor) -> Tensor:
        """The escnn blocks on the fast path: the filters are expanded from the equivariant basis
        as escnn does in training mode, and InnerBatchNorm shares its statistics per field."""
        g = self.field_size
        x = _channels_last(x)
        for i in range(0, len(self.blocks), 5):
            conv, bn, drop = self.blocks[i], self.blocks[i + 1], self.blocks[i + 4]
            weight, bias = conv.expand_parameters()  # (C_out, C_in, k, k), (C_out,)
            x = _fused_block(x, weight, bias, conv.padding, getattr(bn, f"batch_norm_[{g}]"),
                             drop.p if drop.training else 0.0, group=g)
        return _field_max(x, g)  # group pooling: (B, 32, h, w), channels-last


class _Exported(_Classifier):
    """A plain-PyTorch copy of an equivariant model (escnn ``export()``), for fast evaluation."""

    def __init__(self, model: EquivariantCNN) -> None:
        super().__init__()
        self.blocks = model.blocks.export()  # Conv2d-BatchNorm2d-ReLU-MaxPool2d-Dropout x 3
        self.pool = model.pool.export()
        self.head = copy.deepcopy(model.head)
        self.field_size = model.field_size
        self.fused = getattr(model, "fused", True)

    def features(self, x: Tensor) -> Tensor:
        if not _use_fast_path(self, x):
            return self.pool(self.blocks(x))
        return _field_max(_plain_blocks_fused(self.blocks, x), self.field_size)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel and torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's learnable state on the CPU, without escnn's eval-mode filter caches.

    escnn's ``R2Conv`` adds ``filter`` and ``expanded_bias`` buffers in ``eval()`` mode; the
    state is taken in training mode so that it loads into a freshly built model.
    """
    base = _unwrap(model)
    was_training = base.training
    base.train()
    state = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
    base.train(was_training)
    return state


def export_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference; escnn models become plain PyTorch modules.

    The exported network computes the same function (up to float rounding) without rebuilding
    filters from the equivariant basis at every call. The copy is in ``eval()`` mode.
    """
    base = _unwrap(model)
    was_training = base.training
    base.eval()
    out = _Exported(base) if isinstance(base, EquivariantCNN) else copy.deepcopy(base)
    base.train(was_training)
    return out.eval()


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float = 0.2,
    latent_dim: int = 256,
) -> nn.Module:
    """Build a classifier by name: ``cnn``, ``c<N>`` or ``d<N>``.

    >>> m = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    >>> [t.shape for t in m(torch.zeros(2, 1, 32, 32))]
    [torch.Size([2, 256]), torch.Size([2, 3])]
    """
    kind, n = parse_model_name(name)
    if in_channels < 1 or num_classes < 2:
        raise ValueError(
            f"need in_channels >= 1 and num_classes >= 2, got {in_channels} and {num_classes}"
        )
    kw = dict(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size,
        dropout=dropout, latent_dim=latent_dim,
    )
    if kind == "cnn":
        return CNN(**kw)
    return EquivariantCNN(n, dihedral=kind == "d", **kw)
