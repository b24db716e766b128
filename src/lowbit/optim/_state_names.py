"""Which per-parameter state tensors each torch optimizer keeps (one registry, by type).

``state_names(optimizer)`` walks the optimizer's class hierarchy and returns the names of the
tensors it stores per parameter that a state format may apply to (scalars such as Adam's
``step`` are not listed), or None for an optimizer type nobody registered.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

__all__ = ["register_state_names", "state_names"]

_NAMES: Dict[type, Tuple[str, ...]] = {}


def register_state_names(optimizer_type: type, names: Sequence[str]) -> None:
    """Declare the per-parameter state tensors of ``optimizer_type`` (and its subclasses).

    Raises:
        TypeError: ``optimizer_type`` is not a ``torch.optim.Optimizer`` subclass, or ``names``
            is not a sequence of strings.
    """
    if not (isinstance(optimizer_type, type)
            and issubclass(optimizer_type, torch.optim.Optimizer)):
        raise TypeError(f"optimizer_type must be a torch.optim.Optimizer subclass; got "
                        f"{optimizer_type!r}")
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a sequence of strings; got {names!r}")
    _NAMES[optimizer_type] = tuple(names)


def state_names(optimizer: torch.optim.Optimizer) -> Optional[Tuple[str, ...]]:
    """The registered state tensor names of ``optimizer``'s type (nearest registered base),
    or None when neither it nor a base class is registered."""
    for cls in type(optimizer).__mro__:
        if cls in _NAMES:
            return _NAMES[cls]
    return None


def _register_torch() -> None:
    # Read off torch 2.13's optimizers after one step (amsgrad, momentum and centered on).
    table = {
        "SGD": ("momentum_buffer",),
        "Adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        "AdamW": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        "Adamax": ("exp_avg", "exp_inf"),
        "NAdam": ("exp_avg", "exp_avg_sq"),
        "RAdam": ("exp_avg", "exp_avg_sq"),
        "RMSprop": ("square_avg", "momentum_buffer", "grad_avg"),
        "Adagrad": ("sum",),
        "Adadelta": ("square_avg", "acc_delta"),
        "ASGD": ("ax",),
        "Rprop": ("prev", "step_size"),
        "Adafactor": ("row_var", "col_var", "variance"),
        "Muon": ("momentum_buffer",),
    }
    for name, names in table.items():
        cls = getattr(torch.optim, name, None)  # Adafactor/Muon are recent additions
        if cls is not None:
            register_state_names(cls, names)


_register_torch()
