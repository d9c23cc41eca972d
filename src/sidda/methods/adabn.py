r"""AdaBN: source-only training, then the BatchNorm statistics re-estimated on the target.

Li et al. 2016/2018, "Revisiting Batch Normalization for Practical Domain Adaptation" (Pattern
Recognition 80). The network trains on the source cross-entropy alone (as ``source_only``: no
target batch, no warm-up of its own); once, after the last epoch and before the final
checkpoint is written, every BatchNorm layer gets a second set of running statistics estimated
on the **target training images**. Source images keep the statistics of training; target images
are normalised with the target ones in evaluation and prediction
(:class:`~sidda.methods.domain_bn.DomainStats`, saved as the method's ``domain_stats``). The
weights and the affine parameters :math:`\gamma, \beta` are shared.

**The estimator.** One pass over the :math:`N_t` target training images, in order, in batches
of ``train.batch_size``, without gradient, the network in eval mode (dropout off) except that
every BatchNorm layer normalises each batch with that batch's own statistics (its mean and
biased variance over the batch and the spatial positions), as in training. For layer
:math:`l`, with :math:`x_{l,j}` its input values of channel :math:`c` over all :math:`n_l`
positions of all target images (:math:`n_l = N_t H_l W_l`, times the field size for escnn's
``InnerBatchNorm``),

.. math::

    \mu_{l,c} = \frac{1}{n_l} \sum_j x_{l,j}, \qquad
    \sigma^2_{l,c} = \frac{1}{n_l - 1} \sum_j \big(x_{l,j} - \mu_{l,c}\big)^2 ,

exactly, over the whole target set: each batch's mean and sum of squared deviations (from
its own mean, computed in the model's precision) are merged in float64 (Chan, Golub and
LeVeque's pairwise update), not averaged with a momentum.
:math:`\sigma^2` is unbiased, as BatchNorm's own ``running_var``. The inputs of layer
:math:`l` are those that the earlier layers give with batch statistics, so one pass estimates
every layer; with a batch of 128 they are close to what the earlier layers give with the
target running statistics at test time. ``num_batches_tracked`` holds the number of batches.

The checkpoints saved during training (``best_*``, ``epoch_*``) are each given the target
statistics of their own weights once training ends (one more pass per checkpoint). Until then
(a run stopped before its end) they hold none, and evaluation uses the source statistics for
both domains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sidda.methods.base import DAMethod, MethodOutput, StepOutputs
from sidda.methods.domain_bn import DomainStats, batchnorm_layers

__all__ = ["AdaBN", "estimate_target_stats"]


class _PooledStats:
    """Running count, mean and sum of squared deviations of one layer's channels (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None  # (C,)
        self.m2: Tensor | None = None  # (C,)

    def add(self, n: int, mean: Tensor, m2: Tensor) -> None:
        """Merge a batch of ``n`` values per channel with this ``mean`` and ``m2``."""
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.n * n / total)
        self.n = total

    @property
    def var(self) -> Tensor:
        """The unbiased variance, ``m2 / (n - 1)`` (0 for a single value)."""
        return self.m2 / max(self.n - 1, 1)


def _batch_statistics(acc: _PooledStats) -> Callable:
    """A forward pre-hook: record the input's channel statistics in ``acc`` and make the layer
    normalise this batch with them (the layer is in eval mode: it reads its buffers)."""

    def hook(bn: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        dims = [0, *range(2, x.dim())]  # all but the channels
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x, dim=dims, correction=0)  # (C,): biased, as training
        bn.running_mean.copy_(mean)  # normalises this batch with its own statistics
        bn.running_var.copy_(var)
        acc.add(n, mean.double(), var.double() * n)  # the batch's mean and sum of squares

    return hook


@torch.no_grad()
def estimate_target_stats(model: nn.Module, x_t: Tensor, *, batch_size: int,
                          device: torch.device | str = "cpu") -> DomainStats:
    """The target BatchNorm statistics of ``model`` (module docstring), as a
    :class:`~sidda.methods.domain_bn.DomainStats` bound to it. The model's own statistics,
    weights and mode are left as they were.

    Args:
        model: The classifier, with BatchNorm layers.
        x_t: The target images, (N_t, C, H, W), indexable by slices (a tensor, or an
            :class:`~sidda.datasets.ImageSet`'s ``x``).
        batch_size: Images per forward pass.
        device: Where the model is.

    Raises:
        ValueError: ``model`` has no BatchNorm layer that tracks running statistics, or
            ``x_t`` holds no image.
    """
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError("AdaBN needs a model with BatchNorm layers; this one has none")
    if len(x_t) == 0:
        raise ValueError("AdaBN needs target images; got none")
    scratch = DomainStats()  # copies of the buffers: the layers write into these, not their own
    scratch.attach(model)
    pooled = [_PooledStats() for _ in layers]
    hooks = [bn.register_forward_pre_hook(_batch_statistics(acc))
             for bn, acc in zip(layers, pooled, strict=True)]
    # sidda's CPU fast path reads the BatchNorm buffers without calling the layers: run the
    # plain modules, whose pre-hooks then see every input
    fused = [(m, m.fused) for m in model.modules() if isinstance(getattr(m, "fused", None), bool)]
    was = model.training
    n_batches = 0
    try:
        for m, _ in fused:
            m.fused = False
        model.eval()
        with scratch.target():
            for start in range(0, len(x_t), batch_size):
                model(x_t[start:start + batch_size].to(device))
                n_batches += 1
    finally:
        for h in hooks:
            h.remove()
        for m, flag in fused:
            m.fused = flag
        model.train(was)
    stats = DomainStats()
    stats.attach(model)
    for i, acc in enumerate(pooled):
        if acc.mean is None:  # a layer the forward pass never reached keeps its statistics
            continue
        mean, var = getattr(stats, f"t{i}_running_mean"), getattr(stats, f"t{i}_running_var")
        mean.copy_(acc.mean.to(mean.dtype))
        var.copy_(acc.var.to(var.dtype))
        getattr(stats, f"t{i}_num_batches_tracked").fill_(n_batches)
    return stats


class AdaBN(DAMethod):
    """Source-only training; the target BatchNorm statistics estimated after it.

    Its state holds ``domain_stats`` (the target statistics) once :meth:`after_training` has
    run, and nothing before.

    Args:
        latent_dim, num_classes: Unused (every method receives them).
    """

    name = "adabn"
    aligns = False

    def __init__(self, *, latent_dim: int = 256, num_classes: int = 3) -> None:
        super().__init__()
        self._model: list[nn.Module] = []  # the attached model (a list: not a submodule)

    def attach(self, model: nn.Module) -> None:  # noqa: D102
        self._model[:] = [model]

    def forward(self, out: StepOutputs) -> MethodOutput:
        """The source cross-entropy alone (the loop never calls it: AdaBN does not align)."""
        ce = F.cross_entropy(out.logits_s, out.y_s)
        return MethodOutput(ce, ce, ce.new_zeros(()), {})

    def after_training(self, model: nn.Module, x_t: Tensor, *, batch_size: int,
                       device: torch.device) -> bool:
        """Estimate the target statistics of ``model`` (module docstring)."""
        self.domain_stats = estimate_target_stats(model, x_t, batch_size=batch_size,
                                                  device=device)
        return True

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """As :meth:`torch.nn.Module.load_state_dict`; a state with target statistics binds
        them to the attached model, a state without drops the method's."""
        has_stats = any(k.startswith("domain_stats.") for k in state_dict)
        if has_stats and self.domain_stats is None:
            if not self._model:
                raise RuntimeError("attach(model) before loading AdaBN's target statistics")
            stats = DomainStats()
            stats.attach(self._model[0])
            self.domain_stats = stats
        elif not has_stats:
            self.domain_stats = None
        return super().load_state_dict(state_dict, strict, assign)
