"""The interface every domain-adaptation method implements.

A method is an :class:`torch.nn.Module` that decides how a training step's images go through
the network and turns the network's outputs into the objective to minimise. The training loop
(:func:`sidda.train.step.train_step`) knows no method by name; after the warm-up it calls

1. :meth:`DAMethod.forward_passes` on the source and target batches: one forward pass on
   ``cat([x_s, x_t])``, split by domain, or, for a method that keeps one set of BatchNorm
   statistics per domain (``domain_bn``, :class:`~sidda.methods.domain_bn.DomainStats`), a
   source pass and then a target pass with the target statistics;
2. the method itself on the split latents and logits (:class:`StepOutputs`, gathered over the
   ranks), which returns a :class:`MethodOutput`: the total to backpropagate, the
   cross-entropy, the alignment term and anything else worth logging.

Validation calls :meth:`DAMethod.alignment` (the alignment term without side effects) and
passes target images inside :meth:`DAMethod.target_stats`. After the last epoch the loop calls
:meth:`DAMethod.after_training` once (AdaBN estimates its target statistics there).

Parameters a method owns (SIDDA's etas, an adversarial domain head) are trained by the same
optimiser through :meth:`DAMethod.param_groups`, saved in checkpoints with the method's
``state_dict`` (the target BatchNorm statistics too) and averaged over ranks like the model's.

During the warm-up, and for ``source_only`` and ``adabn`` always, the loop minimises the
source cross-entropy alone and never calls the method.

In a loop of your own (README):

>>> import torch
>>> from sidda.methods import LossConfig, build_method
>>> from sidda.models import build_model
>>> model = build_model("cnn", in_channels=1, num_classes=3, image_size=16, latent_dim=8)
>>> method = build_method(LossConfig(method="dan", domain_bn=True), latent_dim=8)
>>> method.attach(model)
>>> x_s, y_s, x_t = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0]), torch.randn(5, 1, 16, 16)
>>> z_s, z_t, logits_s, logits_t = method.forward_passes(model, x_s, x_t)
>>> out = method(StepOutputs(z_s, z_t, logits_s, logits_t, y_s))
>>> out.total.backward()
>>> with torch.no_grad(), method.target_stats():  # predict target images
...     probs_t = model.eval()(x_t)[1].softmax(1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from sidda.methods.domain_bn import DomainStats

__all__ = ["DAMethod", "ForwardOutputs", "MethodOutput", "StepOutputs"]


@dataclass
class StepOutputs:
    """One step's network outputs, split by domain, in float32.

    Attributes:
        z_s: Source latents, shape (B_s, D).
        z_t: Target latents, shape (B_t, D).
        logits_s: Source logits, shape (B_s, K).
        logits_t: Target logits, shape (B_t, K).
        y_s: Source labels, shape (B_s,), int64.
        progress: Fraction of the alignment phase done before this step, in [0, 1]
            (0 at the first step after the warm-up); schedules (DANN's gradient-reversal
            coefficient, a ramped alignment weight) read it.
    """

    z_s: Tensor
    z_t: Tensor
    logits_s: Tensor
    logits_t: Tensor
    y_s: Tensor
    progress: float = 0.0


class ForwardOutputs(NamedTuple):
    """What :meth:`DAMethod.forward_passes` returns: the network's outputs by domain."""

    z_s: Tensor  #: (B_s, D)
    z_t: Tensor  #: (B_t, D)
    logits_s: Tensor  #: (B_s, K)
    logits_t: Tensor  #: (B_t, K)


class MethodOutput(NamedTuple):
    """What a method returns for one step.

    Attributes:
        total: The 0-d objective to backpropagate.
        ce: The source cross-entropy (0-d tensor).
        da: The alignment term as the method defines it (0-d tensor), before its weight.
        logs: Further floats to log per step (e.g. ``blur``, ``eta_1``, ``grl_coeff``,
            ``domain_acc``); keys are column names of ``history_steps.csv``.
        skip: None for a usable step; else the name of what made it unusable (SIDDA:
            ``"max distance"``, latent distances that overflow), and the loop skips the step
            (``total`` and ``da`` are then not used).
    """

    total: Tensor
    ce: Tensor
    da: Tensor
    logs: dict
    skip: str | None = None


class DAMethod(nn.Module):
    """Base class of the domain-adaptation objectives.

    Subclasses set :attr:`name`, implement :meth:`forward`, and override
    :meth:`param_groups` when they own parameters with optimiser settings of their own. The
    hooks :meth:`before_step` and :meth:`after_step` run around ``optimizer.step()`` (SIDDA
    clamps its etas there).

    Args:
        domain_bn: Keep one set of BatchNorm running statistics per domain
            (:class:`~sidda.methods.domain_bn.DomainStats`): two forward passes per step, and
            the target statistics for target images in validation, evaluation and prediction.
    """

    #: The ``loss.method`` name.
    name: ClassVar[str] = ""
    #: Whether the loop gives the method target batches after the warm-up (False: it trains
    #: on the source cross-entropy alone, like ``source_only``; AdaBN).
    aligns: ClassVar[bool] = True

    def __init__(self, *, domain_bn: bool = False) -> None:
        super().__init__()
        self.domain_stats: DomainStats | None = DomainStats() if domain_bn else None

    def forward(self, out: StepOutputs) -> MethodOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def attach(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) model before training or resuming: binds the
        target BatchNorm statistics, when the method keeps them, to the model's layers."""
        if self.domain_stats is not None:
            self.domain_stats.attach(model)

    @property
    def single_pass(self) -> bool:
        """Whether :meth:`forward_passes` makes one forward pass (False: one per domain)."""
        return self.domain_stats is None

    def forward_passes(self, net: nn.Module, x_s: Tensor, x_t: Tensor) -> ForwardOutputs:
        """The network's latents and logits for a source and a target batch.

        One pass on ``cat([x_s, x_t])`` (BatchNorm normalises both domains with their pooled
        batch statistics, as in the paper); with domain-specific statistics a source pass,
        then a target pass inside :meth:`target_stats`, each domain normalised with its own
        batch statistics and updating its own running statistics.

        Args:
            net: The model, returning ``(latent, logits)``.
            x_s: Source images, shape (B_s, C, H, W).
            x_t: Target images, shape (B_t, C, H, W).
        """
        if self.single_pass:
            b = len(x_s)
            z, logits = net(torch.cat([x_s, x_t]))  # (B_s + B_t, D), (B_s + B_t, K)
            return ForwardOutputs(z[:b], z[b:], logits[:b], logits[b:])
        z_s, logits_s = net(x_s)
        with self.target_stats():
            z_t, logits_t = net(x_t)
        return ForwardOutputs(z_s, z_t, logits_s, logits_t)

    @contextlib.contextmanager
    def target_stats(self) -> Iterator[None]:
        """Inside the block the model's BatchNorm layers hold the target statistics (nothing
        changes for a method without them); predict target images in it."""
        with self.domain_stats.target() if self.domain_stats is not None else \
                contextlib.nullcontext():
            yield

    @torch.no_grad()
    def alignment(self, out: StepOutputs) -> float:
        """The alignment term of ``out`` for validation, without side effects on the method
        (its own modules in eval mode, no state updated). The default evaluates
        :meth:`forward` and returns its ``da``."""
        was = self.training
        self.eval()
        try:
            return float(self(out).da)
        finally:
            self.train(was)

    def after_training(self, model: nn.Module, x_t: Tensor, *, batch_size: int,
                       device: torch.device) -> bool:
        """Called once after the last epoch, before the final checkpoint is written, with the
        target training images; returns whether it changed the method's state (then it is
        called again for each checkpoint saved during training, with that checkpoint's
        weights and method state loaded, and the checkpoint is rewritten). Nothing by default.

        Args:
            model: The trained model (unwrapped).
            x_t: The target training images, shape (N_t, C, H, W), on the CPU.
            batch_size: Images per forward pass.
            device: Where the model is.
        """
        return False

    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups of the method's own parameters ([] when it has none)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params}] if params else []

    def before_step(self) -> None:
        """Called between ``backward()`` and ``optimizer.step()``."""

    def after_step(self) -> None:
        """Called right after ``optimizer.step()``."""

    def log_state(self) -> dict:
        """Floats logged with every step, also during the warm-up (SIDDA: the etas)."""
        return {}
