"""After the last epoch: the checkpoints saved during training get the method's final state.

A method whose state is computed from the trained weights once training ends (AdaBN's target
BatchNorm statistics, :meth:`~sidda.methods.base.DAMethod.after_training`) would leave the
``best_*`` and ``epoch_*`` checkpoints, written earlier, without it. :func:`refit_checkpoints`
loads each of them in turn, lets the method compute its state for that checkpoint's weights
and rewrites the checkpoint with it (atomically, :func:`~sidda.runs.save_checkpoint`); the
model's weights (and its train/eval mode) are left as they were. Running it twice gives the
same files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sidda.methods import DAMethod
from sidda.models import model_state
from sidda.runs import load_checkpoint, save_checkpoint

__all__ = ["refit_checkpoints"]

#: Checkpoints that already hold the final state (``final``) or are not models (``last``).
_KEEP = ("final.pt", "last.pt")


def refit_checkpoints(method: DAMethod, model: nn.Module, folder: Path, x_t: Tensor, *,
                      batch_size: int, device: torch.device) -> list[str]:
    """Rewrite the method state of every model checkpoint in ``folder`` but ``final`` and
    ``last`` for its own weights; returns the names rewritten.

    Args:
        method: The method, holding the final state (put back at the end).
        model: The trained model (unwrapped); its weights are put back at the end.
        folder: The run's ``checkpoints`` folder.
        x_t: The target training images (:meth:`~sidda.methods.base.DAMethod.after_training`).
        batch_size: Images per forward pass.
        device: Where the model is.
    """
    was_training = model.training
    keep_model = model_state(model)  # escnn's eval-mode filter caches are not in a checkpoint
    keep_method = {k: v.clone() for k, v in method.state_dict().items()}
    done = []
    try:
        for path in sorted(Path(folder).glob("*.pt")):
            if path.name in _KEEP:
                continue
            saved = load_checkpoint(path)
            model.train()  # the saved state has the keys of training mode (models.model_state)
            model.load_state_dict(saved["model"])
            method.load_state_dict(saved["loss"] or {})
            method.after_training(model, x_t, batch_size=batch_size, device=device)
            state = {k: v.detach().cpu().clone() for k, v in method.state_dict().items()}
            save_checkpoint(path, {**saved, "loss": state})
            done.append(path.stem)
    finally:
        model.train()
        model.load_state_dict(keep_model)
        model.train(was_training)
        method.load_state_dict(keep_method)
    return done
