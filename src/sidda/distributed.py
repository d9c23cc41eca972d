"""Several processes and the GPU: moved to :mod:`sidda.train.distributed` (and
:mod:`sidda.train.collectives`, :mod:`sidda.train.device`, :mod:`sidda.train.config`); this
module only re-exports them."""

from sidda.train.collectives import (
    DistContext,
    all_reduce_with_grad,
    average_gradients,
    broadcast_object,
    gather_object,
    gather_with_grad,
    max_over_ranks,
    shard_indices,
)
from sidda.train.config import DA_SCOPES, DEVICE_PATTERN, DistConfig
from sidda.train.device import autocast_context, check_device, to_device, use_channels_last
from sidda.train.distributed import (
    convert_sync_batchnorm,
    distributed_cross_entropy,
    init_distributed,
    prepare_model,
    shutdown,
    unwrap,
)

__all__ = [
    "DA_SCOPES",
    "DEVICE_PATTERN",
    "DistConfig",
    "DistContext",
    "all_reduce_with_grad",
    "autocast_context",
    "average_gradients",
    "broadcast_object",
    "check_device",
    "convert_sync_batchnorm",
    "distributed_cross_entropy",
    "gather_object",
    "gather_with_grad",
    "init_distributed",
    "max_over_ranks",
    "prepare_model",
    "shard_indices",
    "shutdown",
    "to_device",
    "unwrap",
    "use_channels_last",
]
