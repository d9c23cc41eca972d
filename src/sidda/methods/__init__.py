"""Domain-adaptation objectives, chosen by ``loss.method``.

* ``source_only`` - cross-entropy on the source alone (no module: the loop runs it);
* ``sidda`` - :class:`~sidda.methods.sidda.SIDDAMethod`, SIDDA (paper and robust variants);
* ``dan``, ``coral``, ``dann``, ``cdan``, ``deepjdot``, ``mcc`` - the methods users compare
  SIDDA with, one module each, with its formula and reference in the docstring;
* ``adabn`` - :class:`~sidda.methods.adabn.AdaBN`, source-only training, then BatchNorm
  statistics re-estimated on the target.

All share :class:`~sidda.methods.base.DAMethod`: the same warm-up, data stream, checkpoints,
resume and multi-process rules (:mod:`sidda.train`), and the trainer knows none of them by
name: a method decides its forward passes (:meth:`~sidda.methods.base.DAMethod.forward_passes`;
with ``loss.domain_bn`` one per domain, :mod:`sidda.methods.domain_bn`), its objective, its
validation term and what it does after training.
"""

from sidda.methods.base import DAMethod, ForwardOutputs, MethodOutput, StepOutputs
from sidda.methods.config import METHOD_NAMES, OPTIONS, LossConfig
from sidda.methods.registry import build_method, method_class

__all__ = [
    "METHOD_NAMES",
    "OPTIONS",
    "DAMethod",
    "ForwardOutputs",
    "LossConfig",
    "MethodOutput",
    "StepOutputs",
    "build_method",
    "method_class",
]
