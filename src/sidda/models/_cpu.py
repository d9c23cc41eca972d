"""The CPU fast path of the blocks ``conv -> BatchNorm -> ReLU -> maxpool 2 -> dropout``, and
glibc malloc tuning.

The models (:mod:`sidda.models.cnn`, :mod:`sidda.models.equivariant`) call
:func:`_plain_blocks_fused` or :func:`_fused_block` when :func:`_use_fast_path` says so; the
result is the same function as the modules, with far fewer passes over the activation maps.
Figures: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import ctypes
import logging
import math
import platform
import sys

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["tune_cpu_allocator"]

logger = logging.getLogger(__name__)

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
# (tests/models/test_models_fused.py; exactly in float64). In float32 a rounding-level tie in a
# ReLU or a max-pool window can route one gradient entry differently, as it does between torch's
# own NCHW and channels-last kernels.
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

