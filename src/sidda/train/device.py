"""Devices: which one a run uses, how batches get there, and the GPU's precision and layout.

* :func:`check_device` / :func:`resolve_device`: a device name (``train.device``, ``--device``)
  checked against this machine; under torchrun rank r takes ``cuda:LOCAL_RANK``.
* :func:`to_device`: a batch copied to the device (NHWC on request, without blocking the host
  on a GPU).
* :func:`autocast_context`: bf16 autocast for the model's forward pass on CUDA; the losses run
  in float32 with autocast off (``_no_autocast``).
* :func:`use_channels_last`: NHWC by default on CUDA with bf16.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor

from sidda.errors import InputError, short_repr
from sidda.train.config import DEVICE_PATTERN, DistConfig

__all__ = ["autocast_context", "check_device", "resolve_device", "to_device",
           "use_channels_last"]


def check_device(name: str | torch.device) -> torch.device:
    """The device ``name`` stands for, checked against this machine.

    ``"auto"`` is cuda when a GPU is visible, else cpu. Any other name than ``cpu``, ``cuda``,
    ``cuda:<i>`` and ``auto``, and a GPU that this torch build or machine does not have, raise
    :class:`~sidda.errors.InputError` with what to use instead.

    >>> check_device("cpu")
    device(type='cpu')
    """
    text = str(name)
    if not DEVICE_PATTERN.fullmatch(text):
        raise InputError(
            f"unknown device {short_repr(str(name))} (train.device or --device); use 'cpu', "
            "'cuda', 'cuda:<i>' or 'auto'"
        )
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {text!r} (train.device or --device) but CUDA is not available to this "
                f"torch {torch.__version__}; use 'cpu' or 'auto', or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {text!r} but only {torch.cuda.device_count()} GPU(s) are visible "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of them"
            )
    return dev


def _resolve_device(name: str | torch.device, *, local_rank: int, world_size: int) -> torch.device:
    dev = check_device(name)
    if dev.type == "cpu":
        return dev
    if world_size == 1:
        return dev
    if dev.index is not None:
        raise InputError(
            f"device {name!r} names one GPU, but torchrun started {world_size} processes; use "
            "'cuda' (rank r takes cuda:LOCAL_RANK) and pick GPUs with CUDA_VISIBLE_DEVICES"
        )
    if local_rank >= torch.cuda.device_count():
        raise InputError(
            f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
            "start at most one process per GPU (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; anything else is checked and returned.

    Raises:
        InputError: an unknown device name, or a GPU that is not there
            (:func:`check_device`).
    """
    return check_device(name)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def use_channels_last(cfg: DistConfig, device: torch.device) -> bool:
    """Whether to use NHWC: ``cfg.channels_last``, or by default on CUDA with bf16.

    >>> use_channels_last(DistConfig(), torch.device("cpu"))
    False
    """
    if cfg.channels_last is not None:
        return cfg.channels_last
    return device.type == "cuda" and cfg.bf16


def to_device(
    x: Tensor, device: torch.device, *, channels_last: bool = False, pin_memory: bool = False
) -> Tensor:
    """Copy a batch to ``device``, without blocking the host when the device is a GPU.

    Args:
        x: Images (B, C, H, W), labels (B,) or any tensor.
        device: Target device.
        channels_last: Lay 4-d tensors out as NHWC.
        pin_memory: Page-lock a CPU tensor first; only then can the copy overlap with GPU work.
            Worth it when the next batch is copied while the current one computes.

    >>> to_device(torch.zeros(2, 3, 4, 4), torch.device("cpu"), channels_last=True).stride()
    (48, 1, 12, 3)
    """
    non_blocking = device.type == "cuda"
    if pin_memory and non_blocking and x.device.type == "cpu" and not x.is_pinned():
        x = x.pin_memory()
    if channels_last and x.ndim == 4:
        return x.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
    return x.to(device, non_blocking=non_blocking)


def autocast_context(
    device: torch.device | str, *, enabled: bool = True, cpu_bf16: bool = False
) -> contextlib.AbstractContextManager:
    """bf16 autocast for the model's forward pass on CUDA; nothing elsewhere.

    Use around the forward pass only; compute the loss outside or through this module's loss
    functions, which switch autocast off and cast to float32. A GPU without bf16 support gets
    full precision and a warning. ``cpu_bf16`` asks for bf16 autocast on the CPU as well (slow
    on most CPUs; for tests).

    >>> isinstance(autocast_context("cpu"), contextlib.nullcontext)
    True
    """
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            warnings.warn(
                "this GPU does not support bf16; training in float32 (set dist.bf16: false to "
                "silence this)",
                stacklevel=2,
            )
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_bf16:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
