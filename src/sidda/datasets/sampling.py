"""Seeded, resumable index streams: the batches of an epoch and the endless target cycle.

The order depends only on ``(seed, epoch)`` (source) or ``(seed, batch index)`` (target), so
a run resumed mid-epoch reads the same batches as one that never stopped (docs/recovery.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["batches", "cycle_batches"]

def _perm(n: int, seed: int, stream: int, k: int) -> Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + stream * 7919 + k) % (2**63))
    return torch.randperm(n, generator=g)


def batches(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
) -> list[Tensor]:
    """Index batches of one epoch over ``n`` items (the last one may be smaller).

    The order depends only on (seed, epoch), so a run can be resumed mid-epoch.
    """
    order = _perm(n, seed, 1, epoch) if shuffle else torch.arange(n)
    return list(order.split(batch_size))


def cycle_batches(
    n: int, batch_size: int, *, seed: int, start: int = 0
) -> Iterator[Tensor]:
    """Endless full batches over ``n`` items, reshuffled at every pass; skips ``start`` batches.

    The target domain cycles this way so that an epoch is defined by the source, whatever the
    two sizes. Batches that straddle two passes take the rest from the next pass, so every
    batch holds ``min(batch_size, n)`` distinct-or-wrapped items.
    """
    size = min(batch_size, n)
    pos = start * size
    while True:
        p, off = divmod(pos, n)
        idx = _perm(n, seed, 2, p)[off : off + size]
        if len(idx) < size:
            idx = torch.cat([idx, _perm(n, seed, 2, p + 1)[: size - len(idx)]])
        yield idx
        pos += size
