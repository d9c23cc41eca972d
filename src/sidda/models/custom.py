"""Custom backbones: ``model.name: "package.module:callable"``.

Any importable callable can stand in for the built-in models. :func:`build_custom` imports
``package.module``, looks up ``callable`` in it (a dotted path such as ``Nets.small`` is
followed attribute by attribute) and calls it with the keyword arguments the built-in models
get::

    callable(in_channels=C, num_classes=K, image_size=S, dropout=p, latent_dim=D) -> nn.Module

The module it returns must map images (B, C, S, S) to ``(latent, logits)`` of shapes (B, D')
and (B, K), as the built-in models do: SIDDA and the other methods align the latents and
classify with the logits. D' is the model's own latent width; ``latent_dim`` (the config's
``model.latent_dim``, 256 by default) is a request the callable may follow or ignore, and so
is ``dropout``. A callable that uses neither takes ``**kwargs``.

Every step is checked, and each failure is an :class:`~sidda.errors.InputError` of one line
that says how to fix it: the module cannot be imported, the attribute is missing or not
callable, the keyword arguments do not fit its signature, the result is not an ``nn.Module``
or has no parameters, or its forward pass on a batch of two zero images (eval mode, no
gradient) does not return a (B, D'), (B, K) pair of tensors.

A run stores the name, not the code: evaluating, resuming or exporting a run rebuilds the model
from the name, so the module must be importable then too. ``python -m sidda`` puts the current
folder on ``sys.path``; the ``sidda`` command does not (use ``PYTHONPATH`` or install the package,
``pip install -e .``). docs/models.md has the contract with an example.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import torch
from torch import nn

from sidda.errors import InputError, one_line, short_repr

__all__ = ["build_custom", "is_custom_name", "network_error"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_CUSTOM = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")
_PROBE_BATCH = 2  # images in the forward pass that checks the outputs
#: Modules of the custom networks built in this process (their factory's and their class's),
#: each with the ``model.name`` that built from it last (the one being trained or evaluated): an
#: exception raised in their code is the network's, not sidda's (:func:`network_error`).
_USER_MODULES: dict[str, str] = {}
_LIBRARIES = ("torch", "sidda", "escnn", "builtins", "functools")


def is_custom_name(name: object) -> bool:
    """Whether ``name`` has the form ``package.module:callable``.

    >>> is_custom_name("mypkg.nets:make_net"), is_custom_name("d4"), is_custom_name("a:b c")
    (True, False, False)
    """
    return isinstance(name, str) and _CUSTOM.match(name.strip()) is not None


def _import(module_name: str, name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise InputError(
                f"model.name={name!r}: cannot import module {module_name!r} (no module named "
                f"{missing!r}); put the folder that holds it on sys.path (PYTHONPATH=...) or "
                f"install its package (pip install -e .)"
            ) from None
        raise InputError(
            f"model.name={name!r}: importing module {module_name!r} failed: {one_line(e)}; "
            "install what it imports"
        ) from None
    except Exception as e:  # a syntax error or an exception while the module runs
        raise InputError(
            f"model.name={name!r}: importing module {module_name!r} raised "
            f"{type(e).__name__}: {one_line(e)}; fix the module"
        ) from None


def _factory(name: str) -> Any:
    """The callable that ``name`` (``package.module:callable``) names."""
    module_name, attr_path = name.strip().split(":")
    obj = _import(module_name, name)
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise InputError(
                f"model.name={name!r}: {module_name} has no attribute {attr_path!r}; check the "
                "name after the ':' (model.name: 'package.module:callable')"
            )
        obj = getattr(obj, attr)
    if not callable(obj):
        raise InputError(
            f"model.name={name!r}: {attr_path} is a {type(obj).__name__}, not a callable; name "
            "a function or class that returns a torch.nn.Module"
        )
    return obj


def _describe(out: object) -> str:
    if isinstance(out, torch.Tensor):
        return f"one tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        parts = [f"tensor {tuple(o.shape)}" if isinstance(o, torch.Tensor) else type(o).__name__
                 for o in out[:4]]
        return f"a {type(out).__name__} of {len(out)}: ({', '.join(parts)})"
    return f"a {type(out).__name__}"


def _check_outputs(
    model: nn.Module, name: str, *, in_channels: int, image_size: int, num_classes: int
) -> None:
    """Run ``model`` on (2, C, S, S) zeros in eval mode and check its ``(latent, logits)``."""
    b = _PROBE_BATCH
    shape = (b, in_channels, image_size, image_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape, device=device))
    except Exception as e:
        raise InputError(
            f"model.name={name!r}: the model's forward pass on images of shape {shape} raised "
            f"{type(e).__name__}: {one_line(e, limit=300)}; it must take (B, in_channels, "
            "image_size, image_size) images"
        ) from None
    finally:
        model.train(was_training)
    ok = (
        isinstance(out, (tuple, list)) and len(out) == 2
        and all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in out)
        and out[0].dim() == 2 and out[0].shape[0] == b and out[0].shape[1] >= 1
        and tuple(out[1].shape) == (b, num_classes)
    )
    if not ok:
        raise InputError(
            f"model.name={name!r}: the model's forward pass on {b} images returned "
            f"{_describe(out)}; it must return (latent, logits), float tensors of shapes "
            f"(B, D) and (B, num_classes) = ({b}, D) and ({b}, {num_classes})"
        )


def build_custom(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float = 0.2,
    latent_dim: int = 256,
) -> nn.Module:
    """Build the model that ``package.module:callable`` returns, and check it.

    Args:
        name: ``package.module:callable``.
        in_channels: Image bands C.
        num_classes: Number of classes K.
        image_size: Input height = width S.
        dropout: Passed on (``model.dropout``).
        latent_dim: Passed on (``model.latent_dim``); the latent width is the model's.

    Raises:
        InputError: the name does not lead to a callable that returns a working model.
    """
    if not is_custom_name(name):
        raise InputError(f"model.name={short_repr(name)} is not of the form "
                         "'package.module:callable'")
    name = name.strip()
    fn = _factory(name)
    kwargs = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                  dropout=dropout, latent_dim=latent_dim)
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as e:
        raise InputError(
            f"model.name={name!r}: the callable cannot take the keyword arguments "
            f"{', '.join(kwargs)} ({one_line(e)}); add **kwargs for those it does not use"
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call tell
        pass
    try:
        model = fn(**kwargs)
    except TypeError as e:  # e.g. **kwargs in the signature, passed on to what cannot take them
        raise InputError(
            f"model.name={name!r}: calling it with the keyword arguments {', '.join(kwargs)} "
            f"raised TypeError: {one_line(e, limit=300)}; name a function or class that takes "
            "them (add **kwargs for those it does not use) and returns a torch.nn.Module"
        ) from None
    if not isinstance(model, nn.Module):
        raise InputError(
            f"model.name={name!r}: the callable returned a {type(model).__name__}, not a "
            "torch.nn.Module; return the network"
        )
    if next(model.parameters(), None) is None:
        raise InputError(
            f"model.name={name!r}: the returned {type(model).__name__} has no parameters to "
            "train; return the network with its layers"
        )
    _check_outputs(model, name, in_channels=in_channels, image_size=image_size,
                   num_classes=num_classes)
    for module in (name.split(":")[0], type(model).__module__):
        if module.split(".")[0] not in _LIBRARIES:  # e.g. a factory returning nn.Sequential
            _USER_MODULES[module] = name
    return model


def network_error(e: BaseException) -> InputError | None:
    """The error to report when ``e`` was raised in the code of a custom network built in
    this process (its forward pass during training or evaluation), or None.

    The traceback is walked from the innermost frame out; the first frame of a custom
    network's module names the place. ``torch.nn`` and sidda frames around it do not matter:
    the fault is in the network's code, so the message says so instead of calling it a bug
    in sidda.
    """
    frames = []
    tb = e.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    for tb in reversed(frames):
        module = tb.tb_frame.f_globals.get("__name__")
        if module in _USER_MODULES:
            code = tb.tb_frame.f_code
            return InputError(
                f"model.name={_USER_MODULES[module]!r}: the network raised "
                f"{type(e).__name__}: {one_line(e, limit=300)} (in {code.co_name}, "
                f"{code.co_filename}:{tb.tb_lineno}); the error is in that network's code, "
                "not in sidda: fix it, or rerun with -v for the traceback"
            )
    return None
