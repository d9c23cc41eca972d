"""The interface every domain-adaptation method implements, and the registry of methods.

A method is an :class:`torch.nn.Module` that turns one training step's network outputs into the
objective to minimise. The training loop (:func:`sidda.train.step.train_step`) makes one forward
pass on ``cat([x_s, x_t])`` after the warm-up, splits the latents and logits by domain into a
:class:`StepOutputs`, and calls the method on it. The method returns a :class:`MethodOutput`:
the total to backpropagate, the cross-entropy, the alignment term and anything else worth
logging. Parameters a method owns (SIDDA's etas, an adversarial domain head) are trained by the
same optimiser through :meth:`DAMethod.param_groups`, saved in checkpoints with the method's
``state_dict``, and averaged over ranks like the model's.

During the warm-up, and for ``source_only`` always, the loop minimises the source
cross-entropy alone and never calls the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from torch import Tensor, nn

__all__ = ["DAMethod", "MethodOutput", "StepOutputs"]


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


class MethodOutput(NamedTuple):
    """What a method returns for one step.

    Attributes:
        total: The 0-d objective to backpropagate.
        ce: The source cross-entropy (0-d tensor).
        da: The alignment term as the method defines it (0-d tensor), before its weight.
        logs: Further floats to log per step (e.g. ``blur``, ``eta_1``, ``grl_coeff``,
            ``domain_acc``); keys are column names of ``history_steps.csv``.
    """

    total: Tensor
    ce: Tensor
    da: Tensor
    logs: dict


class DAMethod(nn.Module):
    """Base class of the domain-adaptation objectives.

    Subclasses set :attr:`name`, implement :meth:`forward`, and override
    :meth:`param_groups` when they own parameters with optimiser settings of their own. The
    hooks :meth:`before_step` and :meth:`after_step` run around ``optimizer.step()`` (SIDDA
    clamps its etas there). A method with a ``domain_stats`` submodule
    (:class:`~sidda.methods.domain_bn.DomainStats`) gets its source and target batches in two
    forward passes, each with its own BatchNorm statistics, instead of one concatenated pass.
    """

    #: The ``loss.method`` name.
    name: ClassVar[str] = ""

    def forward(self, out: StepOutputs) -> MethodOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def attach(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) model before training or resuming."""

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
